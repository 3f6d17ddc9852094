"""Batch inference over clip shards with Ray Data: every given specialist scores every clip.

Used by the train job (each stage's test report) and by ``interceptor evaluate`` (the ensemble).
One read of the shards feeds all specialists: :class:`ClipScorer` is a Ray Data callable class
that loads each checkpoint once per actor and adds a ``prob_<specialist>`` column per model.

With ``apply_preprocessing=True`` each checkpoint sees its own stage filter (its recipe's
``preprocessing``) where that can be derived exactly from the shard's crops
(:func:`derive_preprocessing`: any filter from ``resize`` crops, ``clahe_bilateral`` from ``clahe``
crops); ``progress(done, total)`` reports scored clips as they come.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from data_pipeline.batch import rows_to_batch
from data_pipeline.filesystems import FsPath, map_files
from data_pipeline.filters import Preprocessing, apply_filter, bilateral, parse_preprocessing
from ray_jobs.checkpoints import load_checkpoint, model_from_checkpoint
from ray_jobs.datasets import configure_ray_data, parquet_source
from ray_jobs.storage import Storage, fetch_checkpoint_dir, remove_local_copy
from specialists.model import model_inputs

PASS_THROUGH = ("video_id", "dataset", "label", "method", "group", "split", "chunk", "clip_index", "face_index")


def derive_preprocessing(frames: np.ndarray, have: str | Preprocessing, want: str | Preprocessing) -> np.ndarray | None:
    """Crops prepared with filter ``have`` turned into the crops filter ``want`` gives, when exact.

    Filters run after the crop's resize, so ``resize`` crops give every filter, and
    ``clahe_bilateral`` is ``bilateral(clahe(x))``, so ``clahe`` crops give it too. Returns
    ``None`` when ``want`` cannot be derived from ``have`` (e.g. ``clahe`` from ``clahe_bilateral``).
    """
    have, want = parse_preprocessing(have), parse_preprocessing(want)
    if have is want:
        return frames
    if have is Preprocessing.RESIZE:
        return apply_filter(frames, want)
    if have is Preprocessing.CLAHE and want is Preprocessing.CLAHE_BILATERAL:
        return np.stack([bilateral(np.ascontiguousarray(f)) for f in frames])
    return None


class ClipScorer:
    """Ray Data callable: ``batch -> batch`` with fake probabilities ``prob_<key>`` per checkpoint."""

    def __init__(self, storage: Storage, checkpoints: Mapping[str, Sequence[str]], threads: int = 1,
                 apply_preprocessing: bool = False):
        torch.set_num_threads(max(1, threads))
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.apply_preprocessing = apply_preprocessing
        self.models = {}
        self.preprocessing: dict[str, str] = {}
        for key, parts in checkpoints.items():
            local = fetch_checkpoint_dir(storage, *parts)
            try:
                payload = load_checkpoint(local)
                self.models[key] = model_from_checkpoint(payload, self.device).eval()
                self.preprocessing[key] = str(payload["recipe"].get("preprocessing", Preprocessing.RESIZE.value))
            finally:
                remove_local_copy(storage, local)

    def _frames_for(self, batch: dict, want: str):
        """The batch's ``frames`` column with filter ``want`` wherever it can be derived."""
        have = np.asarray(batch["preprocessing"]).astype(str)
        if (have == want).all():
            return batch["frames"]
        frames = list(batch["frames"])
        t, s = np.asarray(batch["num_frames"]), np.asarray(batch["size"])
        for i in np.flatnonzero(have != want):
            clip = np.frombuffer(frames[i], dtype=np.uint8).reshape(int(t[i]), int(s[i]), int(s[i]), 3)
            derived = derive_preprocessing(clip, have[i], want)
            if derived is not None:
                frames[i] = np.ascontiguousarray(derived).tobytes()
        return np.array(frames, dtype=object)

    @torch.no_grad()
    def __call__(self, batch: dict) -> dict:
        out = {k: np.asarray(batch[k]) for k in PASS_THROUGH if k in batch}
        per_filter = self.apply_preprocessing and "preprocessing" in batch
        cache: dict[str, dict] = {}
        for key, model in self.models.items():
            want = self.preprocessing[key] if per_filter else ""
            if want not in cache:
                cache[want] = rows_to_batch({**batch, "frames": self._frames_for(batch, want)} if want else batch)
            logits = model(**model_inputs(cache[want], self.device)).float()
            out[f"prob_{key}"] = torch.softmax(logits, dim=1)[:, 1].cpu().numpy()
        return out


def score_shards(storage: Storage, checkpoints: Mapping[str, Sequence[str]], shard_files: Sequence[str],
                 batch_size: int = 64, num_cpus: float = 1.0, num_gpus: float = 0.0,
                 apply_preprocessing: bool = False, read_cpus: float | None = None,
                 progress: Callable[[int, int], None] | None = None,
                 endpoint: str | None = None) -> dict[str, np.ndarray]:
    """Score every clip of ``shard_files`` (local paths or ``s3://`` URIs, read where they are) with
    every checkpoint; columns as numpy arrays.

    ``apply_preprocessing``: give each checkpoint its own stage filter where derivable (see
    :func:`derive_preprocessing`). ``read_cpus``: CPUs per Parquet read task (default
    ``min(num_cpus, 0.25)``: reading is light, and a read task that cannot be scheduled next to
    the scoring actors would stall the pipeline on a small machine). ``progress(done, total)`` is
    called as scored clips arrive. ``endpoint``: the shards' S3 endpoint (default: the storage's).
    """
    import ray.data

    if not shard_files:
        raise ValueError("no shards to score")
    configure_ray_data()
    endpoint = endpoint or storage.endpoint
    files = [str(f) for f in shard_files]
    ds = ray.data.read_parquet(**parquet_source(files, endpoint),
                               num_cpus=read_cpus if read_cpus is not None else min(num_cpus, 0.25))
    scored = ds.map_batches(ClipScorer, fn_constructor_kwargs={"storage": storage, "checkpoints": dict(checkpoints),
                                                               "threads": max(1, int(num_cpus)),
                                                               "apply_preprocessing": apply_preprocessing},
                            batch_size=batch_size, batch_format="numpy",
                            compute=ray.data.ActorPoolStrategy(size=1),
                            num_cpus=num_cpus, num_gpus=num_gpus)
    if progress is None:
        rows = scored.to_pandas()
        return {c: rows[c].to_numpy() for c in rows.columns}
    import pyarrow.parquet as pq

    def rows(f: str) -> int:
        p = FsPath.of(f, endpoint)
        return pq.read_metadata(p.path, filesystem=p.fs).num_rows

    total = sum(map_files(rows, files))
    parts, done = [], 0
    progress(0, total)
    for part in scored.iter_batches(batch_size=None, batch_format="numpy"):
        parts.append(part)
        done += len(next(iter(part.values()))) if part else 0
        progress(done, total)
    return {c: np.concatenate([p[c] for p in parts]) for c in parts[0]} if parts else {}
