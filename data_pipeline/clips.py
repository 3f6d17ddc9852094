"""Video -> clip rows: the single function shared by preparation (Ray Data) and inference.

:func:`extract_clips` decodes evenly spread clips of a video (:func:`.video.decode_clips`),
finds one stable face box per clip (:func:`.faces.clip_box`; a clip without a detection borrows
the box of the nearest clip that has one), crops a square with a margin, resizes it to the stage
size S, applies the stage filter (:func:`.filters.apply_filter`) and returns one row per clip in
the shard schema (:func:`.shards.make_row`). An unusable video raises :class:`SkipVideo` with a
short reason (``"missing file"``, ``"no face"``, or a :class:`.video.VideoError` reason such as
``"empty file"``, ``"unreadable"``, ``"truncated"``, ``"decode error"``, ``"too short"``).
Nothing here imports Ray.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from .faces import FaceDetector, clip_box, create_detector, crop_face, fill_missing
from .filters import Preprocessing, apply_filter, parse_preprocessing
from .shards import make_row
from .sources.manifest import ManifestRow
from .video import AudioConfig, VideoError, decode_clips

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
    probes: int = 3
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
    row: ManifestRow, cfg: ClipConfig, detector: FaceDetector | None = None
) -> ClipResult:
    """Like :func:`extract_clips`, also returning notes (``"no audio track"``, clips whose face
    box was borrowed from a neighbouring clip) for the preparation report."""
    if not row.exists:
        raise SkipVideo("missing file")
    detector = detector or cfg.make_detector()
    try:
        decoded = decode_clips(row.path, cfg.clip_len, cfg.clips_per_video, cfg.stride, cfg.audio)
    except VideoError as exc:
        raise SkipVideo(exc.reason, exc.detail) from None
    found = [clip_box(frames, detector, cfg.probes) for frames in decoded.frames]
    boxes = fill_missing(found)
    if all(b is None for b in boxes):
        raise SkipVideo("no face", f"no face in {len(found)} clip(s)")
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
