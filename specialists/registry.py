"""What a specialist is, and the registry that holds them.

A specialist is described by a :class:`SpecialistSpec`: a key, a human name, what it detects, the
parallel conv branches of its specialist module, and the *view* of the clip those branches see.
Specs are data. ``specialists/zoo.py`` registers the six of the design; adding a seventh is one
``register_specialist(SpecialistSpec(...))`` row there (or in a small module imported by it), and
every test that iterates :func:`list_specialists` picks it up.

This module imports nothing of the zoo (that would be an import cycle: the zoo imports this module).
The package's ``__init__`` imports ``specialists.zoo`` instead, the timm way, and since importing
``specialists.registry`` runs ``specialists/__init__.py`` first, the built-ins are registered in every
process that can see this module, Ray workers unpickling a spec by its module path included.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum


class SpecialistError(ValueError):
    """A one-line, user-facing error about specialists, models or checkpoints."""


class InputView(str, Enum):
    """What the specialist module's branches look at (the backbone always sees the centre frame).

    * ``rgb``: the clip's centre frame.
    * ``motion``: the centre frame plus the clip's temporal standard deviation and mean absolute
      frame-to-frame difference (9 channels, independent of the clip length T), so the branches see
      motion between frames.
    * ``low_light``: the centre frame with its exposure normalised per sample (mean luminance scaled
      to 0.5), so sensor noise and crushed shadows are visible to the branches however dark the
      capture was.
    * ``grid``: the clip's codec-grid patch (``data_pipeline/grid.py``): the centre frame around the
      face as decoded, cut on the 16-px codec grid, not resampled and not filtered, so block
      boundaries and requantisation stay where an 8x8, stride-8 branch sees one block per step.
    """

    RGB = "rgb"
    MOTION = "motion"
    LOW_LIGHT = "low_light"
    GRID = "grid"

    @property
    def in_channels(self) -> int:
        return 9 if self is InputView.MOTION else 3


@dataclass(frozen=True)
class BranchSpec:
    """One conv branch of a specialist module: ``channels`` filters of size ``kernel`` x ``kernel``.

    ``stride`` sets the branch's sampling step on the input; the output is pooled to 7x7 anyway.
    """

    name: str
    channels: int
    kernel: int
    stride: int = 2


@dataclass(frozen=True)
class SpecialistSpec:
    """A registered specialist: the contract numbers of design section 2 live here."""

    key: str
    name: str
    detects: str
    branches: tuple[BranchSpec, ...]
    view: InputView = InputView.RGB
    residual: bool = False
    """The branches also see the view's high-frequency residual (the view minus its 3x3 local
    mean, see :func:`specialists.branches.high_pass`), stacked after it: doubles the module's
    input channels. For specialists whose artefacts are fine texture (codec blocks, missing
    detail after upscaling, sensor noise, blending seams) that a from-scratch network otherwise
    has to learn to isolate first."""
    uses_audio: bool = False
    uses_sync: bool = False
    """The model also encodes the clip's audio-visual sync curves (``data_pipeline/sync.py``: mouth
    features against audio features at offsets of +-0.6 s) as one more token."""
    uses_lighting: bool = False
    """The model also encodes the clip's lighting cues (``data_pipeline/lighting.py``: the light's
    colour and direction on the face against around it) as one more token."""
    pool_size: int = 7
    notes: str = field(default="", compare=False)

    @property
    def in_channels(self) -> int:
        """Input channels of the module's branches: the view's, twice with the residual."""
        return self.view.in_channels * (2 if self.residual else 1)

    @property
    def channels(self) -> int:
        return sum(b.channels for b in self.branches)

    @property
    def features(self) -> int:
        """Flattened module output: ``channels * pool_size * pool_size``."""
        return self.channels * self.pool_size * self.pool_size

    def to_dict(self) -> dict:
        d = asdict(self)
        d["view"] = self.view.value
        d["branches"] = [asdict(b) for b in self.branches]
        return d


_REGISTRY: dict[str, SpecialistSpec] = {}


def register_specialist(spec: SpecialistSpec) -> SpecialistSpec:
    """Add ``spec`` to the registry; a duplicate key is refused."""
    if spec.key in _REGISTRY:
        raise SpecialistError(f"specialist {spec.key!r} is already registered")
    if not spec.branches:
        raise SpecialistError(f"specialist {spec.key!r} has no branches")
    names = [b.name for b in spec.branches]
    if len(set(names)) != len(names):
        raise SpecialistError(f"specialist {spec.key!r} has duplicate branch names: {names}")
    _REGISTRY[spec.key] = spec
    return spec


def list_specialists() -> list[str]:
    """Registered specialist keys, sorted."""
    return sorted(_REGISTRY)


def get_spec(key: str) -> SpecialistSpec:
    """The spec registered under ``key``; an unknown key names the known ones."""
    try:
        return _REGISTRY[key]
    except KeyError:
        raise SpecialistError(
            f"unknown specialist {key!r}; known: {', '.join(sorted(_REGISTRY))}"
        ) from None
