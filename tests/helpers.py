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
    x = x.clamp(0, 1)
    # the codec-grid view (CM's input) of a clip: here its centre frame
    return {"frames": x, "audio": torch.zeros(n, 40, 16), "has_audio": torch.zeros(n, dtype=torch.bool),
            "grid": x[:, frames // 2].clone(), "label": label.long()}


def batches(data: dict[str, torch.Tensor], batch_size: int, seed: int | None = None):
    """Yield batch dicts; shuffled deterministically by ``seed`` when given."""
    n = data["label"].shape[0]
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)) if seed is not None else torch.arange(n)
    for i in range(0, n, batch_size):
        idx = order[i:i + batch_size]
        yield {k: v[idx] for k, v in data.items()}


def write_learnable_shards(folder, dataset: str = "ffpp", n_train: int = 96, n_val: int = 32, n_test: int = 32,
                           chunks: int = 1, size: int = 32, seed: int = 0, preprocessing: str = "resize",
                           endpoint: str | None = None):
    """Write Parquet clip shards (the real schema) of the learnable task: train/val/test splits,
    training spread over ``chunks`` chunk ids, labelled with the stage filter ``preprocessing``, to a
    local folder or an ``s3://`` prefix (``endpoint``). Returns the folder."""
    from pathlib import Path

    import numpy as np

    from data_pipeline.filesystems import FsPath, is_s3
    from data_pipeline.shards import make_row, shard_name, write_shard

    if not is_s3(folder):
        Path(folder).mkdir(parents=True, exist_ok=True)
    target = FsPath.of(folder, endpoint)
    plan = [("train", c, n_train // chunks) for c in range(chunks)] + [("val", 0, n_val), ("test", 0, n_test)]
    for i, (split, chunk, n) in enumerate(plan):
        data = learnable_clips(n, size=size, seed=seed * 100 + i)
        frames = (data["frames"].permute(0, 1, 3, 4, 2).numpy() * 255).round().astype(np.uint8)
        rows, ids = [], []
        for j in range(n):
            vid = f"{split}/c{chunk}/{j:04d}.mp4"
            label = int(data["label"][j])
            manifest = {"video_id": vid, "path": f"/synthetic/{vid}", "dataset": dataset, "label": label,
                        "method": "checker" if label else "real", "group": f"g{split}{chunk}{j // 2}",
                        "split": split, "chunk": chunk}
            audio = np.random.default_rng(j).standard_normal((40, 16)).astype(np.float32) if j % 3 else None
            rows.append(make_row(manifest, 0, frames[j], audio, [0, 0, size, size], preprocessing,
                                 grid=frames[j][len(frames[j]) // 2]))
            ids.append(vid)
        write_shard(target / shard_name(dataset, split, ids, chunk=chunk if chunks > 1 else None), rows)
    return folder if is_s3(folder) else Path(folder)
