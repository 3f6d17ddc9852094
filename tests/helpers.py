"""Small shared helpers for tests: a learnable in-memory clip task and tiny-model settings."""

from __future__ import annotations

import torch

TINY = dict(backbone="test_efficientnet", image_size=32, embed_dim=32, num_heads=2)


def learnable_clips(n: int, size: int = 32, frames: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """Clips where fakes carry a high-frequency checkerboard on the "face": easy to learn."""
    g = torch.Generator().manual_seed(seed)
    base = 0.3 + 0.4 * torch.rand(n, 1, 3, 1, 1, generator=g)
    x = (base + 0.05 * torch.randn(n, frames, 3, size, size, generator=g)).expand(n, frames, 3, size, size).clone()
    label = torch.arange(n) % 2
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    checker = (((yy // 2 + xx // 2) % 2).float() - 0.5) * 0.3
    lo, hi = size // 4, 3 * size // 4
    x[label == 1, :, :, lo:hi, lo:hi] += checker[lo:hi, lo:hi]
    return {"frames": x.clamp(0, 1), "audio": torch.zeros(n, 40, 16), "has_audio": torch.zeros(n, dtype=torch.bool),
            "label": label.long()}


def batches(data: dict[str, torch.Tensor], batch_size: int, seed: int | None = None):
    """Yield batch dicts; shuffled deterministically by ``seed`` when given."""
    n = data["label"].shape[0]
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)) if seed is not None else torch.arange(n)
    for i in range(0, n, batch_size):
        idx = order[i:i + batch_size]
        yield {k: v[idx] for k, v in data.items()}
