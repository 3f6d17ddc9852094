"""Clip rows -> training-batch tensors: the last step before a model, shared by training (the
collate function of Ray Data's stream), scoring and inference.

:func:`rows_to_batch` turns a batch of clip rows (:mod:`.shards`' schema; NumPy columns, lists, a
pandas DataFrame or a ``pyarrow.Table``) into the tensors of ``docs/architecture.md``'s training
batch; :func:`iter_shard_batches` reads shard files batch by batch into them, for single processes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .audio import AudioConfig
from .filesystems import FsPath
from .shards import Location, ShardError

if TYPE_CHECKING:  # annotations only: importing torch here would load it into every Ray Data task
    import torch

#: the columns of a clip row that make a model input (what :func:`rows_to_batch` reads)
MODEL_INPUT_COLUMNS = ("frames", "num_frames", "size", "audio", "audio_shape", "has_audio", "grid", "grid_size",
                       "sync", "sync_shape", "lighting", "label")

def iter_shard_batches(files: Iterable[Location], batch_size: int, columns: Sequence[str] | None = None,
                       extras: Sequence[str] = (), endpoint: str | None = None):
    """Training-batch tensors (:func:`rows_to_batch`) of shard files (local or ``s3://``) read in
    order, ``batch_size`` rows at a time (a file's last batch may be smaller), without loading whole
    files: for a single process (scoring a split in a worker, benchmarks); training streams with Ray Data."""
    for f in files:
        p = FsPath.of(f, endpoint)
        with p.fs.open_input_file(p.path) as source:
            for rb in pq.ParquetFile(source).iter_batches(batch_size=batch_size, columns=list(columns) if columns else None):
                yield rows_to_batch(pa.Table.from_batches([rb]), extras=extras)


def _column(batch: Any, name: str) -> np.ndarray:
    if isinstance(batch, pa.Table):
        return batch.column(name).to_numpy(zero_copy_only=False)
    col = batch[name]
    if hasattr(col, "to_numpy"):
        return col.to_numpy()
    return np.asarray(col, dtype=object) if isinstance(col, list) else np.asarray(col)


def _has_column(batch: Any, name: str) -> bool:
    return name in (batch.column_names if isinstance(batch, pa.Table) else batch)


def _grid_tensor(batch: Any, b: int) -> "torch.Tensor | None":
    """``(B, 3, G, G)`` uint8 codec-grid patches, or ``None`` when no row has one (shards from
    before the grid column; rows made without it)."""
    import torch

    if not _has_column(batch, "grid"):
        return None
    sizes = np.asarray(_column(batch, "grid_size"), dtype=np.int64)
    if (sizes == 0).all():
        return None
    if (sizes != sizes[0]).any():
        raise ShardError(f"a batch mixes codec-grid patch sizes {sorted(set(sizes.tolist()))} (0: no patch)")
    g = int(sizes[0])
    flat = np.empty((b, g * g * 3), dtype=np.uint8)
    for i, x in enumerate(_column(batch, "grid")):
        flat[i] = np.frombuffer(x, dtype=np.uint8)
    return torch.from_numpy(flat.reshape(b, g, g, 3)).permute(0, 3, 1, 2)


def _sync_tensors(batch: Any, b: int) -> "tuple[torch.Tensor, torch.Tensor]":
    """``(B, curves, offsets)`` float32 sync curves (zeros where absent) and ``has_sync`` ``(B,)``."""
    import torch

    from .sync import SyncConfig

    if not _has_column(batch, "sync"):
        return torch.zeros((b, *SyncConfig().shape)), torch.zeros(b, dtype=torch.bool)
    shapes = [tuple(int(v) for v in s) for s in _column(batch, "sync_shape")]
    has = np.array([s != (0, 0) and len(s) == 2 for s in shapes], dtype=bool)
    present = {s for s, h in zip(shapes, has) if h}
    if len(present) > 1:
        raise ShardError(f"a batch mixes sync shapes: {sorted(present)}")
    shape = present.pop() if present else SyncConfig().shape
    out = np.zeros((b, *shape), dtype=np.float32)
    raw = _column(batch, "sync")
    for i in np.flatnonzero(has):
        out[i] = np.frombuffer(raw[i], dtype=np.float32).reshape(shape)
    return torch.from_numpy(out), torch.from_numpy(has)


def _lighting_tensors(batch: Any, b: int) -> "tuple[torch.Tensor, torch.Tensor]":
    """``(B, 15)`` float32 lighting cues (zeros where absent) and ``has_lighting`` ``(B,)``."""
    import torch

    from .lighting import CUES

    out = np.zeros((b, 3 * len(CUES)), dtype=np.float32)
    has = np.zeros(b, dtype=bool)
    if _has_column(batch, "lighting"):
        for i, v in enumerate(_column(batch, "lighting")):
            if v is not None and len(v):
                if len(v) != out.shape[1]:
                    raise ShardError(f"lighting cues of row {i} hold {len(v)} values, expected {out.shape[1]}")
                out[i], has[i] = np.asarray(v, np.float32), True
    return torch.from_numpy(out), torch.from_numpy(has)


def _default_audio_shape() -> tuple[int, int]:
    cfg = AudioConfig()
    return cfg.n_mels, cfg.window_steps


def frames_to_float(frames: "torch.Tensor") -> "torch.Tensor":
    """uint8 frames in ``[0, 255]`` as float32 in ``[0, 1]``, on their own device; float frames
    pass through unchanged."""
    import torch

    return frames.float().div_(255.0) if frames.dtype == torch.uint8 else frames


def rows_to_batch(
    batch: Mapping[str, Any] | pa.Table,
    audio_shape: tuple[int, int] | None = None,
    extras: Sequence[str] = (),
    uint8_frames: bool = False,
) -> dict[str, Any]:
    """Turn a batch of clip rows into the training-batch tensors of ``docs/architecture.md``.

    Args:
        batch: columns of clip rows: a dict of NumPy arrays (Ray Data
            ``iter_batches(batch_format="numpy")``), of lists, a pandas DataFrame or a
            ``pyarrow.Table``.
        audio_shape: ``(n_mels, n_steps)`` used for the zero audio of a batch in which no clip
            has audio; default: the shape of the batch's audio, else :class:`~.audio.AudioConfig`'s.
        extras: further columns passed through as Python lists (e.g. ``("method", "video_id")``).
        uint8_frames: leave ``frames`` uint8 in ``[0, 255]`` for the training device to convert
            (:func:`frames_to_float`): a quarter of the bytes to pin and copy to a GPU.

    Returns:
        ``frames`` float32 ``(B, T, 3, S, S)`` in ``[0, 1]`` (uint8 with ``uint8_frames``); ``audio`` float32
        ``(B, n_mels, n_steps)``, zeros where absent; ``has_audio`` bool ``(B,)``; ``grid``
        ``(B, 3, G, G)`` as ``frames`` (only when the rows have codec-grid patches); ``sync``
        float32 ``(B, curves, offsets)``, zeros where absent, and ``has_sync`` bool ``(B,)``;
        ``lighting`` float32 ``(B, 15)``, zeros where absent, and ``has_lighting``; ``label``
        int64 ``(B,)``; plus ``extras``.
    """
    import torch

    raw = _column(batch, "frames")
    b = len(raw)
    t = np.asarray(_column(batch, "num_frames"), dtype=np.int64)
    s = np.asarray(_column(batch, "size"), dtype=np.int64)
    if b == 0:
        raise ShardError("empty batch")
    if (t != t[0]).any() or (s != s[0]).any():
        raise ShardError(f"a batch mixes clip shapes: T in {sorted(set(t.tolist()))}, S in {sorted(set(s.tolist()))}")
    T, S = int(t[0]), int(s[0])
    per_clip = T * S * S * 3
    flat = np.empty((b, per_clip), dtype=np.uint8)
    for i, x in enumerate(raw):
        clip = np.frombuffer(x, dtype=np.uint8)
        if clip.size != per_clip:
            raise ShardError(f"frames of row {i} hold {clip.size} bytes, expected T*S*S*3 = {per_clip}")
        flat[i] = clip
    frames = torch.from_numpy(flat.reshape(b, T, S, S, 3)).permute(0, 1, 4, 2, 3)
    if not uint8_frames:
        frames = frames_to_float(frames)

    has_audio = np.asarray(_column(batch, "has_audio"), dtype=bool)
    raw_audio = _column(batch, "audio")
    shapes = _column(batch, "audio_shape")
    with_audio = np.flatnonzero(has_audio)
    if len(with_audio):
        shape = tuple(int(v) for v in shapes[with_audio[0]])
    else:
        shape = tuple(audio_shape) if audio_shape is not None else _default_audio_shape()
    audio = np.zeros((b, *shape), dtype=np.float32)
    for i in with_audio:
        if tuple(int(v) for v in shapes[i]) != shape:
            raise ShardError(f"a batch mixes audio shapes: {shape} and {tuple(shapes[i])}")
        audio[i] = np.frombuffer(raw_audio[i], dtype=np.float32).reshape(shape)

    out: dict[str, Any] = {
        "frames": frames,
        "audio": torch.from_numpy(audio),
        "has_audio": torch.from_numpy(has_audio.copy()),
        "label": torch.from_numpy(np.array(_column(batch, "label"), dtype=np.int64)),
    }
    grid = _grid_tensor(batch, b)
    if grid is not None:
        out["grid"] = grid if uint8_frames else frames_to_float(grid)
    out["sync"], out["has_sync"] = _sync_tensors(batch, b)
    out["lighting"], out["has_lighting"] = _lighting_tensors(batch, b)
    for name in extras:
        out[name] = list(_column(batch, name))
    return out
