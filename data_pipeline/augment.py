"""Training-time clip augmentation from a stage's :class:`AugmentationSpec` (torchvision v2).

One random draw per clip: a v2 transform applied to a ``(T, 3, H, W)`` tensor samples its
parameters once and applies them to every frame, so motion between frames is preserved.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torchvision is imported where transforms are built: importing it costs ~1 s,
    # and processes that only read configs (Tune trials, Ray Train controllers) never build one
    import torch
    from torchvision.transforms import v2


@dataclass(frozen=True)
class AugmentationSpec:
    """The stage's augmentation strength (design section 3)."""

    rotation: float = 0.0
    """Max rotation in degrees (uniform in [-rotation, rotation])."""
    brightness: float = 0.0
    """Brightness jitter factor (ColorJitter brightness)."""
    translate: float = 0.0
    """Max translation as a fraction of the side."""
    perspective: float = 0.0
    """Perspective distortion scale (applied with probability 0.5)."""
    hflip: bool = False
    """Random horizontal flip (off in the seed's recipes)."""

    def __post_init__(self) -> None:
        for name in ("rotation", "brightness", "translate", "perspective"):
            if getattr(self, name) < 0:
                raise ValueError(f"augmentation {name} must be >= 0, got {getattr(self, name)}")

    @property
    def is_identity(self) -> bool:
        return not (self.rotation or self.brightness or self.translate or self.perspective or self.hflip)


def build_augmentation(spec: AugmentationSpec) -> v2.Transform | None:
    """A v2 pipeline for float clips in ``[0, 1]``; ``None`` when the spec does nothing."""
    if spec.is_identity:
        return None
    from torchvision.transforms import v2

    steps: list[v2.Transform] = []
    if spec.hflip:
        steps.append(v2.RandomHorizontalFlip())
    if spec.rotation or spec.translate:
        steps.append(v2.RandomAffine(degrees=spec.rotation,
                                     translate=(spec.translate, spec.translate) if spec.translate else None))
    if spec.perspective:
        steps.append(v2.RandomPerspective(distortion_scale=spec.perspective, p=0.5))
    if spec.brightness:
        steps.append(v2.ColorJitter(brightness=spec.brightness))
    return v2.Compose(steps)


def augment_batch(frames: torch.Tensor, transform: v2.Transform | None) -> torch.Tensor:
    """Augment a batch ``(B, T, 3, H, W)`` clip by clip (same parameters across a clip's frames)."""
    if transform is None:
        return frames
    import torch

    return torch.stack([transform(clip) for clip in frames]).clamp_(0, 1)
