"""What a specialist is: registry, modules, model, losses, and the ensemble.

Importing this package (which importing any ``specialists.*`` module does first) registers the
built-in specialists: ``specialists.zoo`` holds their rows; ``specialists.registry`` does not import it.
"""

from specialists import zoo  # noqa: F401  (registers the built-in specialists)
from specialists.model import ModelConfig, SpecialistModel, create_model
from specialists.registry import (
    BranchSpec,
    InputView,
    SpecialistError,
    SpecialistSpec,
    get_spec,
    list_specialists,
    register_specialist,
)

__all__ = ["BranchSpec", "InputView", "ModelConfig", "SpecialistError", "SpecialistModel",
           "SpecialistSpec", "create_model", "get_spec", "list_specialists", "register_specialist"]
