"""What a specialist is: registry, modules, model, losses, and the ensemble."""

from specialists.model import ModelConfig, SpecialistModel, create_model
from specialists.registry import (BranchSpec, InputView, SpecialistError, SpecialistSpec, get_spec,
                                  list_specialists, register_specialist)

__all__ = ["BranchSpec", "InputView", "ModelConfig", "SpecialistError", "SpecialistModel",
           "SpecialistSpec", "create_model", "get_spec", "list_specialists", "register_specialist"]
