"""Video -> clip rows: the single function shared by preparation (Ray Data) and inference.

:func:`extract_clips` decodes evenly spread clips of a video (:func:`.video.decode_clips`),
finds one stable face box per clip (:func:`.faces.track_video`; a clip without a detection borrows
the box of the nearest clip that has one), crops a square with a margin, resizes it to the stage
size S, applies the stage filter (:func:`.filters.apply_filter`) and returns one row per clip in
the shard schema (:func:`.shards.make_row`). An unusable video raises :class:`SkipVideo` with a
short reason (``"missing file"``, ``"no face"``, or a :class:`.video.VideoError` reason such as
``"empty file"``, ``"unreadable"``, ``"truncated"``, ``"decode error"``, ``"too short"``).
Nothing here imports Ray.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Mapping

from .audio import AudioConfig
from .faces import FaceDetector, create_detector, crop_face, fill_missing, track_video
from .filesystems import FsPath
from .filters import Preprocessing, apply_filter, parse_preprocessing
from .shards import Location, make_row, write_shard
from .sources.manifest import ManifestRow
from .video import VideoError, decode_clips

#: note recorded for a video that has no audio track (it is still used, with has_audio false)
NOTE_NO_AUDIO = "no audio track"


class SkipVideo(Exception):
    """A video that cannot give any clip; ``reason`` is short and machine-friendly."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason} ({detail})" if detail else reason)


@dataclass
class ClipConfig:
    """How clips are cut from a video.

    Attributes:
        size: side S of the square face crop (px).
        clip_len: frames per clip T.
        clips_per_video: clips spread evenly over each video (fewer for short videos).
        stride: distance between a clip's frames.
        margin: fraction of the face box size added on each side of the crop.
        preprocessing: stage filter: ``resize``, ``clahe`` or ``clahe_bilateral``.
        detector: face detector name (see :func:`.faces.create_detector`).
        detector_options: keyword options of the detector (e.g. ``max_side``, ``model_path``).
        probes: frames of each clip the detector runs on.
        audio: log-mel settings of the per-clip audio window, or ``None`` for no audio.
    """

    size: int = 224
    clip_len: int = 4
    clips_per_video: int = 8
    stride: int = 1
    margin: float = 0.3
    preprocessing: Preprocessing = Preprocessing.RESIZE
    detector: str = "haar"
    detector_options: dict[str, Any] = field(default_factory=dict)
    probes: int = 1
    audio: AudioConfig | None = field(default_factory=AudioConfig)

    def __post_init__(self) -> None:
        self.preprocessing = parse_preprocessing(self.preprocessing)
        if isinstance(self.audio, Mapping):
            self.audio = AudioConfig(**self.audio)
        for name in ("size", "clip_len", "clips_per_video", "stride", "probes"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"ClipConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.size < 8:
            raise ValueError(f"ClipConfig.size must be >= 8 px, got {self.size}")
        if self.margin < 0:
            raise ValueError(f"ClipConfig.margin must be >= 0, got {self.margin}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (enum as its value); :meth:`from_dict` reads it back."""
        d = dataclasses.asdict(self)
        d["preprocessing"] = self.preprocessing.value
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ClipConfig":
        """Build from a dict such as :meth:`to_dict`'s (unknown keys are an error)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown clip option(s): {', '.join(unknown)}")
        return cls(**dict(data))

    def make_detector(self) -> FaceDetector:
        """The configured face detector."""
        return create_detector(self.detector, **self.detector_options)


@dataclass
class ClipResult:
    """What :func:`extract_clips_with_notes` returns: the rows and notes about the video."""

    rows: list[dict[str, Any]]
    notes: list[str]


def extract_clips_with_notes(
    row: ManifestRow, cfg: ClipConfig, detector: FaceDetector | None = None, endpoint: str | None = None
) -> ClipResult:
    """Like :func:`extract_clips`, also returning notes (``"no audio track"``, clips whose face
    box was borrowed from a neighbouring clip) for the preparation report. ``row.path`` may be an
    ``s3://`` URI (``endpoint``: a custom S3 endpoint): the video is decoded from the object."""
    detector = detector or cfg.make_detector()
    try:
        decoded = decode_clips(FsPath.of(row.path, endpoint), cfg.clip_len, cfg.clips_per_video, cfg.stride, cfg.audio)
    except VideoError as exc:
        raise SkipVideo(exc.reason, exc.detail) from None
    found = track_video(decoded.frames, detector, cfg.probes, fill=False)
    boxes = fill_missing(found)
    if all(b is None for b in boxes):
        raise SkipVideo("no face", f"no face in {len(boxes)} clip(s)")
    notes: list[str] = []
    if cfg.audio is not None and not decoded.info.has_audio:
        notes.append(NOTE_NO_AUDIO)
    borrowed = sum(b is None for b in found)
    if borrowed:
        notes.append(f"{borrowed} of {len(found)} clip(s) without a detected face used the nearest clip's box")
    manifest = row.to_dict()
    rows = []
    for k, (frames, box) in enumerate(zip(decoded.frames, boxes)):
        assert box is not None
        crops, crop_box = crop_face(frames, box, cfg.size, cfg.margin)
        crops = apply_filter(crops, cfg.preprocessing)
        audio = decoded.audio[k] if decoded.audio is not None else None
        rows.append(make_row(manifest, k, crops, audio, crop_box, cfg.preprocessing.value))
    return ClipResult(rows, notes)


def extract_clips(row: ManifestRow, cfg: ClipConfig, detector: FaceDetector | None = None) -> list[dict[str, Any]]:
    """Clip rows (shard schema, one per clip) of the video of ``row``.

    Args:
        row: the video's manifest row (for inference, any row with the video's ``path``).
        cfg: clip settings.
        detector: a face detector; default ``cfg.make_detector()`` (pass one to reuse it).

    Raises:
        SkipVideo: the video gives no clip (missing, unreadable, too short, no face).
    """
    return extract_clips_with_notes(row, cfg, detector).rows


# --------------------------------------------------------------------------- one shard (a Ray Data task)

_DETECTORS: dict[str, FaceDetector] = {}


def cached_detector(cfg: ClipConfig) -> FaceDetector:
    """The calling process's detector for ``cfg`` (built once per process and settings)."""
    key = json.dumps([cfg.detector, cfg.detector_options], sort_keys=True, default=str)
    if key not in _DETECTORS:
        _DETECTORS[key] = cfg.make_detector()
    return _DETECTORS[key]


def video_status(
    row: ManifestRow, status: str, clips: int = 0, reason: str = "", detail: str = "", notes: Iterable[str] = ()
) -> dict[str, Any]:
    """The per-video status record of a preparation run (stored in the shard's metadata)."""
    return {
        "video_id": row.video_id,
        "path": row.path,
        "split": row.split,
        "chunk": row.chunk,
        "label": row.label,
        "method": row.method,
        "status": status,
        "clips": clips,
        "reason": reason,
        "detail": detail,
        "notes": "; ".join(notes),
    }


def process_shard(
    name: str, rows: list[ManifestRow], out_dir: Location, cfg: ClipConfig, metadata: Mapping[str, Any] | None = None,
    endpoint: str | None = None,
) -> list[dict[str, Any]]:
    """Make one shard: the clips of every video of ``rows``, written atomically as ``out_dir/name``
    (a local folder or an ``s3://`` prefix; ``endpoint``: a custom S3 endpoint, for videos too).

    Returns one status per video, also stored in the shard's metadata (``status``) next to
    ``metadata``. A video that cannot be used gets a ``skipped`` status with its reason; an
    unexpected error on one video is reported the same way (reason ``"error"``) and does not
    stop the others. The shard is written even when every video was skipped (zero rows), so a
    rerun knows the batch is done.
    """
    import cv2

    cv2.setNumThreads(1)
    detector = cached_detector(cfg)
    clip_rows: list[dict[str, Any]] = []
    statuses = []
    for row in rows:
        try:
            result = extract_clips_with_notes(row, cfg, detector, endpoint)
        except SkipVideo as exc:
            statuses.append(video_status(row, "skipped", reason=exc.reason, detail=exc.detail))
            continue
        except Exception as exc:  # noqa: BLE001 - one bad video must not stop the job
            text = str(exc).strip()
            detail = f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"
            statuses.append(video_status(row, "skipped", reason="error", detail=detail))
            continue
        clip_rows += result.rows
        statuses.append(video_status(row, "ok", clips=len(result.rows), notes=result.notes))
    write_shard(FsPath.of(out_dir, endpoint) / name, clip_rows, {**(metadata or {}), "status": statuses})
    return statuses


def shard_task(item: Mapping[str, Any], out_dir: str, clip: Mapping[str, Any], fingerprint: str,
               endpoint: str | None = None) -> list[dict[str, Any]]:
    """Ray Data ``flat_map`` function of the preparation job: one batch -> per-video status rows.

    ``item`` is ``{"shard": file name, "videos": JSON list of manifest rows}``. It lives here,
    not in ``ray_jobs.sharding``, so Ray workers import only this light module (no torch).
    """
    rows = [ManifestRow.from_dict(r) for r in json.loads(item["videos"])]
    statuses = process_shard(item["shard"], rows, out_dir, ClipConfig.from_dict(clip), {"config": fingerprint}, endpoint)
    return [{**s, "shard": item["shard"], "shard_videos": len(rows)} for s in statuses]
