"""Parquet clip shards: the schema, atomic writes, resumability, and reading rows back.

One row per clip; the columns are the clip-shard contract of ``docs/architecture.md``:

============== ================= ==========================================================
column         arrow type        meaning
============== ================= ==========================================================
video_id       string            manifest fields, copied from the video's manifest row
path           string
dataset        string
label          int64             0 real, 1 fake: the FACE's label (a video is fake if any face is)
method         string
group          string
split          string
chunk          int32
original       string            a fake's original video where known, else ""
clip_index     int32             index of the clip within its video
face_index     int32             the face track (0: the face seen in most clips)
frames         binary            uint8 RGB ``(T, S, S, 3)``, C order
num_frames     int32             T
size           int32             S
audio          binary            float32 log-mel ``(n_mels, n_steps)``, C order; b"" without audio
audio_shape    list<int32>       ``[n_mels, n_steps]`` (``[0, 0]`` without audio)
has_audio      bool              the clip has an aligned audio window
grid           binary            uint8 RGB ``(G, G, 3)``: the clip's centre frame around the face,
                                 cut on the codec grid, not resampled, unfiltered (:mod:`.grid`)
grid_size      int32             G
sync           binary            float32 ``(curves, offsets)`` AV sync curves (:mod:`.sync`); b"" without
sync_shape     list<int32>       ``[curves, offsets]`` (``[0, 0]`` without audio or sync)
lighting       list<float32>     15 lighting cues of the centre frame, face against surround
                                 (:mod:`.lighting`); empty when not computed
face_box       list<float32>     ``[x0, y0, x1, y1]`` of the crop in source-frame pixels
preprocessing  string            ``resize``, ``clahe`` or ``clahe_bilateral``
============== ================= ==========================================================

Shards live in a local/NFS folder or under an ``s3://`` prefix (every function here takes either,
plus ``endpoint`` for a custom S3 endpoint; :mod:`.filesystems`). They are written atomically
(locally ``<name>.parquet.tmp`` then :func:`os.replace`; on S3 the complete file in one upload), so
a reader never sees a partial ``.parquet`` file, and named deterministically from the batch of
videos they hold (:func:`shard_name`), so a rerun of the preparation recognises and skips finished
shards. A shard's Parquet key-value metadata carries the per-video status of its batch
(:data:`STATUS_KEY`), so a resumed run rebuilds the same report without redoing the work.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .filesystems import FsPath, write_atomic
from .sources.manifest import MANIFEST_FIELDS

#: file-level metadata keys of a shard
STATUS_KEY = b"interceptor.status"
CONFIG_KEY = b"interceptor.config"
#: suffix of a shard being written
TMP_SUFFIX = ".tmp"
#: rows per Parquet row group (readers stream row group by row group)
ROW_GROUP_ROWS = 64

#: the clip-shard schema (see the module docstring); no column is nullable
SCHEMA = pa.schema(
    [
        pa.field(name, type_, nullable=False)
        for name, type_ in [
            # the video's manifest fields
            ("video_id", pa.string()), ("path", pa.string()), ("dataset", pa.string()), ("label", pa.int64()),
            ("method", pa.string()), ("group", pa.string()), ("split", pa.string()), ("chunk", pa.int32()),
            ("original", pa.string()),
            # the clip: frames, audio, crop box, stage filter
            ("clip_index", pa.int32()), ("face_index", pa.int32()), ("frames", pa.binary()), ("num_frames", pa.int32()), ("size", pa.int32()),
            ("audio", pa.binary()), ("audio_shape", pa.list_(pa.int32())), ("has_audio", pa.bool_()),
            ("grid", pa.binary()), ("grid_size", pa.int32()), ("sync", pa.binary()), ("sync_shape", pa.list_(pa.int32())),
            ("lighting", pa.list_(pa.float32())),
            ("face_box", pa.list_(pa.float32())), ("preprocessing", pa.string()),
        ]
    ]
)
COLUMNS: tuple[str, ...] = tuple(SCHEMA.names)
assert COLUMNS[: len(MANIFEST_FIELDS)] == MANIFEST_FIELDS
_SMALL_COLUMNS = [c for c in COLUMNS if c not in ("frames", "audio", "grid", "sync")]

#: a shard file or folder: a local path, an ``s3://`` URI or a path on a filesystem
Location = Union[str, "os.PathLike[str]", FsPath]

_SHARD_NAME = re.compile(r"^(?P<dataset>[a-z0-9]+)-(?P<split>[a-z]+)(?:-c(?P<chunk>\d+))?-(?P<digest>[0-9a-f]{16})\.parquet$")


#: columns added after the first shards were written, with what they brought: shards without one of
#: them are refused by training and evaluation (:func:`outdated_schema`)
ADDED_COLUMNS = {"face_index": "face tracks", "grid": "the codec-grid patch, the sync curves and the lighting cues"}


def outdated_schema(names: Sequence[str]) -> str | None:
    """Why shards with these column names must be prepared again, or ``None`` when they are current."""
    missing = [c for c in ADDED_COLUMNS if c not in names]
    if not missing:
        return None
    return f"prepared before {ADDED_COLUMNS[missing[-1]]} (no {missing[-1]} column); prepare them again"


class ShardError(ValueError):
    """A shard or a row does not follow the schema (one-line message)."""


# --------------------------------------------------------------------------- rows


def make_row(
    manifest: Mapping[str, Any],
    clip_index: int,
    frames: np.ndarray,
    audio: np.ndarray | None,
    face_box: Sequence[float],
    preprocessing: str,
    face_index: int = 0,
    grid: np.ndarray | None = None,
    sync: np.ndarray | None = None,
    lighting: np.ndarray | None = None,
) -> dict[str, Any]:
    """One clip row per :data:`SCHEMA` from the video's manifest fields and the clip's arrays.

    Args:
        manifest: the video's manifest fields (a ``ManifestRow.to_dict()``; ``original`` may be absent).
        clip_index: index of the clip within its video.
        frames: uint8 ``(T, S, S, 3)`` RGB face crops.
        audio: float32 ``(n_mels, n_steps)`` log-mel window, or ``None``.
        face_box: ``[x0, y0, x1, y1]`` of the crop in source-frame pixels.
        preprocessing: the stage filter that was applied.
        face_index: the face track the crops follow (0: the face seen in most clips).
        grid: uint8 ``(G, G, 3)`` codec-grid patch (:func:`.grid.grid_patch`), or ``None``.
        sync: float32 ``(curves, offsets)`` AV sync curves (:func:`.sync.sync_curves`), or ``None``.
        lighting: float32 ``(15,)`` lighting cues (:func:`.lighting.lighting_cues`), or ``None``.
    """
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[1] != frames.shape[2] or frames.shape[3] != 3:
        raise ShardError(f"frames must be uint8 (T, S, S, 3), got {frames.dtype} {frames.shape}")
    row = {k: manifest[k] for k in MANIFEST_FIELDS if k != "original"}
    row["original"] = str(manifest.get("original") or "")  # optional: known for some fakes only
    row.update(
        clip_index=int(clip_index),
        face_index=int(face_index),
        frames=np.ascontiguousarray(frames).tobytes(),
        num_frames=int(frames.shape[0]),
        size=int(frames.shape[1]),
        face_box=[float(v) for v in face_box],
        preprocessing=str(preprocessing),
    )
    if audio is None:
        row.update(audio=b"", audio_shape=[0, 0], has_audio=False)
    else:
        a = np.ascontiguousarray(audio, dtype=np.float32)
        if a.ndim != 2:
            raise ShardError(f"audio must be (n_mels, n_steps), got {a.shape}")
        row.update(audio=a.tobytes(), audio_shape=list(a.shape), has_audio=True)
    if grid is None:
        row.update(grid=b"", grid_size=0)
    else:
        g = np.asarray(grid)
        if g.dtype != np.uint8 or g.ndim != 3 or g.shape[0] != g.shape[1] or g.shape[2] != 3:
            raise ShardError(f"grid must be uint8 (G, G, 3), got {g.dtype} {g.shape}")
        row.update(grid=np.ascontiguousarray(g).tobytes(), grid_size=int(g.shape[0]))
    if sync is None:
        row.update(sync=b"", sync_shape=[0, 0])
    else:
        y = np.ascontiguousarray(sync, dtype=np.float32)
        if y.ndim != 2:
            raise ShardError(f"sync must be (curves, offsets), got {y.shape}")
        row.update(sync=y.tobytes(), sync_shape=list(y.shape))
    row["lighting"] = [] if lighting is None else [float(v) for v in np.asarray(lighting, np.float32).reshape(-1)]
    return row


def decode_row(row: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray | None]:
    """``(frames (T, S, S, 3) uint8, audio (n_mels, n_steps) float32 or None)`` of a clip row."""
    t, s = int(row["num_frames"]), int(row["size"])
    frames = np.frombuffer(row["frames"], dtype=np.uint8)
    if frames.size != t * s * s * 3:
        raise ShardError(f"frames hold {frames.size} bytes, expected T*S*S*3 = {t * s * s * 3}")
    frames = frames.reshape(t, s, s, 3)
    if not bool(row["has_audio"]):
        return frames, None
    shape = tuple(int(v) for v in row["audio_shape"])
    audio = np.frombuffer(row["audio"], dtype=np.float32)
    if audio.size != int(np.prod(shape)):
        raise ShardError(f"audio holds {audio.size} floats, expected {shape}")
    return frames, audio.reshape(shape)


# --------------------------------------------------------------------------- names and files


def batch_digest(video_ids: Iterable[str]) -> str:
    """16 hex digits identifying a batch of videos (order-independent)."""
    h = hashlib.sha1()
    for vid in sorted(video_ids):
        h.update(vid.encode("utf-8") + b"\0")
    return h.hexdigest()[:16]


def shard_name(dataset: str, split: str, video_ids: Iterable[str], chunk: int | None = None) -> str:
    """Deterministic shard file name ``<dataset>-<split>[-c<chunk>]-<digest of video ids>.parquet``.

    The chunk is part of the name for chunked datasets (DFDC) so a chunk's shards are found by
    name; the digest makes a rerun over the same videos land on the same file.
    """
    chunk_part = f"-c{int(chunk):03d}" if chunk is not None else ""
    return f"{dataset}-{split}{chunk_part}-{batch_digest(video_ids)}.parquet"


def parse_shard_name(name: str) -> dict[str, Any] | None:
    """``{"dataset", "split", "chunk" (int or None), "digest"}`` of a shard file name, or ``None``."""
    m = _SHARD_NAME.match(Path(name).name)
    if not m:
        return None
    d = m.groupdict()
    return {**d, "chunk": int(d["chunk"]) if d["chunk"] is not None else None}


def write_shard(path: Location, rows: Sequence[Mapping[str, Any]], metadata: Mapping[str, Any] | None = None,
                endpoint: str | None = None) -> FsPath:
    """Write ``rows`` as one Parquet shard at ``path``, atomically; returns where it is.

    Locally the data go to ``<path>.tmp``, which is then renamed onto ``path`` with
    :func:`os.replace` (atomic on POSIX filesystems); on S3 the file is encoded in memory and
    uploaded as one object, which S3 publishes only once complete. Either way ``path`` does not
    exist or is complete, whenever the writing process dies. (No fsync: surviving a power cut is
    left to the filesystem.) ``metadata`` values are stored JSON-encoded under
    ``interceptor.<key>`` in the file's key-value metadata. An empty ``rows`` writes a valid
    zero-row shard (a batch whose videos were all skipped is still finished).
    """
    dest = FsPath.of(path, endpoint)
    schema = SCHEMA
    if metadata:
        schema = SCHEMA.with_metadata({f"interceptor.{k}".encode(): json.dumps(v, sort_keys=True) for k, v in metadata.items()})
    try:
        table = pa.Table.from_pylist(list(rows), schema=schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError, KeyError) as exc:
        raise ShardError(f"rows do not match the shard schema: {str(exc).splitlines()[0]}") from None
    nulls = [name for name in COLUMNS if table.column(name).null_count]
    if nulls:
        raise ShardError(f"rows do not match the shard schema: missing values in {', '.join(nulls)}")
    options = dict(compression="zstd", compression_level=1, row_group_size=ROW_GROUP_ROWS,
                   use_dictionary=_SMALL_COLUMNS,  # no dictionary / statistics over the pixel and audio blobs
                   write_statistics=_SMALL_COLUMNS)
    if not dest.is_local:
        buffer = pa.BufferOutputStream()
        pq.write_table(table, buffer, **options)
        write_atomic(dest.fs, dest.path, buffer.getvalue())
        return dest
    local = Path(dest.path)
    local.parent.mkdir(parents=True, exist_ok=True)
    tmp = local.with_name(local.name + TMP_SUFFIX)
    try:
        pq.write_table(table, tmp, **options)
        os.replace(tmp, local)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest


def shard_metadata(path: Location, endpoint: str | None = None) -> dict[str, Any]:
    """The ``interceptor.*`` key-value metadata of a shard, decoded (``{"status": [...], ...}``)."""
    p = FsPath.of(path, endpoint)
    meta = pq.read_schema(p.path, filesystem=p.fs).metadata or {}
    out = {}
    for k, v in meta.items():
        if k.startswith(b"interceptor."):
            out[k.decode()[len("interceptor.") :]] = json.loads(v)
    return out


def list_complete_shards(
    out_dir: Location,
    dataset: str | None = None,
    split: str | Sequence[str] | None = None,
    chunk: int | Sequence[int] | None = None,
    endpoint: str | None = None,
) -> list[FsPath]:
    """Finished shards in ``out_dir`` (never ``*.tmp``), sorted by name, optionally filtered by
    dataset, split(s) and chunk(s) as encoded in their names. One listing of the folder."""
    folder = FsPath.of(out_dir, endpoint)
    splits = {split} if isinstance(split, str) else set(split) if split is not None else None
    chunks = {chunk} if isinstance(chunk, int) else set(chunk) if chunk is not None else None
    out = []
    for p in folder.snapshot().glob("*.parquet"):
        info = parse_shard_name(p.name)
        if info is None or not p.is_file():
            continue
        if dataset is not None and info["dataset"] != dataset:
            continue
        if splits is not None and info["split"] not in splits:
            continue
        if chunks is not None and (info["chunk"] or 0) not in chunks:
            continue
        out.append(FsPath(p.fs, p.path))
    return out


def remove_partial(out_dir: Location, endpoint: str | None = None) -> list[FsPath]:
    """Delete leftover ``*.parquet.tmp`` files of an interrupted run; returns what was removed
    (S3 never has any: an interrupted upload leaves no object)."""
    removed = []
    for p in FsPath.of(out_dir, endpoint).glob(f"*.parquet{TMP_SUFFIX}"):
        p.fs.delete_file(p.path)
        removed.append(p)
    return removed


def read_rows(path: Location, columns: Sequence[str] | None = None, endpoint: str | None = None) -> list[dict[str, Any]]:
    """All rows of one shard as dicts (small shards, tests and tools; training streams with Ray Data)."""
    p = FsPath.of(path, endpoint)
    return pq.read_table(p.path, filesystem=p.fs, columns=list(columns) if columns else None).to_pylist()


# --------------------------------------------------------------------------- training batches
