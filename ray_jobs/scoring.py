"""Batch inference over clip shards with Ray Data: every given specialist scores every clip.

Used by the train job (each stage's test report) and by ``interceptor evaluate`` (the ensemble).
One read of the shards feeds all specialists: :class:`ClipScorer` is a Ray Data callable class
that loads each checkpoint once per actor and adds a ``prob_<specialist>`` column per model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from data_pipeline.shards import rows_to_batch
from ray_jobs.checkpoints import load_checkpoint, model_from_checkpoint
from ray_jobs.storage import Storage, fetch_checkpoint_dir, remove_local_copy

PASS_THROUGH = ("video_id", "dataset", "label", "method", "group", "split", "chunk", "clip_index")


class ClipScorer:
    """Ray Data callable: ``batch -> batch`` with fake probabilities ``prob_<key>`` per checkpoint."""

    def __init__(self, storage: Storage, checkpoints: Mapping[str, Sequence[str]], threads: int = 1):
        torch.set_num_threads(max(1, threads))
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.models = {}
        for key, parts in checkpoints.items():
            local = fetch_checkpoint_dir(storage, *parts)
            try:
                self.models[key] = model_from_checkpoint(load_checkpoint(local), self.device).eval()
            finally:
                remove_local_copy(storage, local)

    @torch.no_grad()
    def __call__(self, batch: dict) -> dict:
        tensors = rows_to_batch(batch)
        out = {k: np.asarray(batch[k]) for k in PASS_THROUGH if k in batch}
        frames = tensors["frames"].to(self.device)
        audio, has_audio = tensors["audio"].to(self.device), tensors["has_audio"].to(self.device)
        for key, model in self.models.items():
            logits = model(frames, audio, has_audio).float()
            out[f"prob_{key}"] = torch.softmax(logits, dim=1)[:, 1].cpu().numpy()
        return out


def score_shards(storage: Storage, checkpoints: Mapping[str, Sequence[str]], shard_files: Sequence[str],
                 batch_size: int = 64, num_cpus: float = 1.0, num_gpus: float = 0.0) -> dict[str, np.ndarray]:
    """Score every clip of ``shard_files`` with every checkpoint; columns as numpy arrays."""
    import ray.data

    if not shard_files:
        raise ValueError("no shards to score")
    from ray_jobs.train import configure_ray_data

    configure_ray_data()
    ds = ray.data.read_parquet([str(f) for f in shard_files], num_cpus=min(num_cpus, 0.5))
    scored = ds.map_batches(ClipScorer, fn_constructor_kwargs={"storage": storage, "checkpoints": dict(checkpoints),
                                                               "threads": max(1, int(num_cpus))},
                            batch_size=batch_size, batch_format="numpy",
                            compute=ray.data.ActorPoolStrategy(size=1),
                            num_cpus=num_cpus, num_gpus=num_gpus)
    rows = scored.to_pandas()
    return {c: rows[c].to_numpy() for c in rows.columns}
