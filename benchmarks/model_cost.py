"""Train-step time and parameter count of every specialist vs its bare backbone, in one run.

    python benchmarks/model_cost.py [--backbone efficientnet_b4] [--sizes 224 380] [--batch 4] [--steps 3] [--grid 128]

Prints, per image size, the bare backbone's step time (forward + backward + AdamW step on the
centre frame with a linear head) and each specialist's step time and parameters as a ratio to it.
Every specialist gets all its inputs: clips, audio windows, the codec-grid patch (``--grid`` px,
CM's branches see it instead of the resized crop) and the sync curves (AV's extra token).
Target (issue 2): specialist module + fusion cost at most 15% over the backbone (ratio <= 1.15).
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import torch
from torch import nn

from data_pipeline.sync import SyncConfig
from specialists import create_model, list_specialists
from specialists.model import create_backbone


def step_time(model: nn.Module, make_inputs, steps: int, device: torch.device) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train().to(device)
    times = []
    for i in range(steps + 1):  # the first step is warm-up
        args, y = make_inputs()
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out = model(*args)
        loss = nn.functional.cross_entropy(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def bare_inputs(batch: int, size: int, device: torch.device) -> tuple:
    """A batch for the bare backbone: the centre frames only."""
    return ((torch.rand(batch, 3, size, size, device=device),), torch.randint(0, 2, (batch,), device=device))


def specialist_inputs(batch: int, frames: int, size: int, grid: int, device: torch.device) -> tuple:
    """A batch for a specialist: clips, audio windows, codec-grid patches and sync curves, all with audio."""
    on = torch.ones(batch, dtype=torch.bool, device=device)
    return ((torch.rand(batch, frames, 3, size, size, device=device),
             torch.randn(batch, 40, 16, device=device), on,
             torch.rand(batch, 3, grid, grid, device=device),
             torch.rand(batch, *SyncConfig().shape, device=device) * 2 - 1, on),
            torch.randint(0, 2, (batch,), device=device))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="efficientnet_b4")
    ap.add_argument("--sizes", type=int, nargs="+", default=[224, 380])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--specialists", nargs="*", default=None)
    ap.add_argument("--grid", type=int, default=128, help="codec-grid patch side (prepare's grid_size)")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    keys = args.specialists or list_specialists()
    print(f"device={device} backbone={args.backbone} batch={args.batch} T={args.frames} "
          f"torch_threads={torch.get_num_threads()}")
    for size in args.sizes:
        bare = nn.Sequential(create_backbone(args.backbone), nn.LazyLinear(2))
        bare(torch.rand(1, 3, size, size))
        t_bare = step_time(bare, partial(bare_inputs, args.batch, size, device), args.steps, device)
        p_bare = sum(p.numel() for p in bare.parameters())
        print(f"\nsize {size}: bare backbone step {t_bare * 1000:.0f} ms, {p_bare / 1e6:.2f} M params")
        print(f"{'specialist':>10} {'step ms':>9} {'ratio':>6} {'params M':>9} {'ratio':>6}")
        del bare
        for key in keys:
            model = create_model(key, backbone=args.backbone, image_size=size)
            inputs = partial(specialist_inputs, args.batch, args.frames, size, args.grid, device)
            t = step_time(model, inputs, args.steps, device)
            p = sum(q.numel() for q in model.parameters())
            print(f"{key:>10} {t * 1000:9.0f} {t / t_bare:6.3f} {p / 1e6:9.2f} {p / p_bare:6.3f}")
            del model


if __name__ == "__main__":
    main()
