"""Video -> clip rows: the per-video steps shared by preparation (Ray Data) and inference.

A video goes through three steps, which the preparation runs as separate Ray Data stages
(:mod:`.prepare_stages`: decoding and cropping are CPU tasks, detection is an actor stage that
loads its CNN once) and inference runs in sequence (:func:`extract_clips`):

1. :func:`decode_video`: evenly spread clips (:func:`.video.decode_clips`) and their audio windows;
2. :func:`detect_faces`: the detector on each clip's probe frames, all frames of the video as one
   batch (:meth:`.faces.DownscaledDetector.detect_batch`); a video with no face on its probes is
   searched again on every decoded frame;
3. :func:`clip_rows`: every face (up to ``max_faces`` face tracks, :func:`.tracks.face_tracks`)
   gets its clips: a square margin crop resized to the stage size S and the stage filter
   (:func:`.filters.apply_filter`), the clip's codec-grid patch (:mod:`.grid`), lighting cues
   (:mod:`.lighting`) and the face's AV sync curves (:mod:`.sync`), one row per (face, clip) in the
   shard schema
   (:func:`.shards.make_row`, with the track's ``face_index``). A fake with a known original and
   several faces labels each face by whether it differs from the original (:mod:`.face_labels`).

An unusable video raises :class:`SkipVideo` with a short reason (``"missing file"``, ``"no face"``,
or a :class:`.video.VideoError` reason such as ``"empty file"``, ``"unreadable"``, ``"truncated"``,
``"decode error"``, ``"too short"``). Nothing here imports Ray.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from .audio import AudioConfig
from .face_labels import label_faces
from .faces import Box, FaceDetector, create_detector, crop_face
from .filesystems import FsPath
from .filters import Preprocessing, apply_filter, parse_preprocessing
from .grid import ALIGN, grid_patch
from .lighting import lighting_cues
from .shards import make_row
from .sources.manifest import ManifestRow
from .sync import SyncConfig, mouth_features, sync_curves, sync_window
from .tracks import DEFAULT_MAX_FACES, DEFAULT_MIN_COVERAGE, face_tracks, fill_missing, probe_indices
from .video import DecodedClips, VideoError, decode_clips

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
        max_faces: face tracks kept per video (most seen first).
        min_coverage: share of a video's clips a face must be detected in to be kept.
        audio: log-mel settings of the per-clip audio window, or ``None`` for no audio.
        grid_size: side G of the codec-grid patch of each clip's centre frame (:mod:`.grid`; a
            multiple of 16, CM's input).
        sync: AV sync settings (:mod:`.sync`), or ``None`` for no sync curves (needs ``audio``).
        lighting: compute each clip's lighting cues (:mod:`.lighting`, BG's input).
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
    max_faces: int = DEFAULT_MAX_FACES
    min_coverage: float = DEFAULT_MIN_COVERAGE
    audio: AudioConfig | None = field(default_factory=AudioConfig)
    grid_size: int = 128
    sync: SyncConfig | None = field(default_factory=SyncConfig)
    lighting: bool = True

    def __post_init__(self) -> None:
        self.preprocessing = parse_preprocessing(self.preprocessing)
        if isinstance(self.audio, Mapping):
            self.audio = AudioConfig(**self.audio)
        if isinstance(self.sync, Mapping):
            self.sync = SyncConfig(**self.sync)
        if self.grid_size < ALIGN or self.grid_size % ALIGN:
            raise ValueError(f"ClipConfig.grid_size must be a positive multiple of {ALIGN}, got {self.grid_size}")
        for name in ("size", "clip_len", "clips_per_video", "stride", "probes", "max_faces"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"ClipConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.size < 8:
            raise ValueError(f"ClipConfig.size must be >= 8 px, got {self.size}")
        if self.margin < 0:
            raise ValueError(f"ClipConfig.margin must be >= 0, got {self.margin}")
        if not 0.0 <= self.min_coverage <= 1.0:
            raise ValueError(f"ClipConfig.min_coverage must be in [0, 1], got {self.min_coverage}")

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
    """What :func:`clip_rows` returns: the rows, notes about the video, and its face count."""

    rows: list[dict[str, Any]]
    notes: list[str]
    faces: int = 1


def decode_video(row: ManifestRow, cfg: ClipConfig, endpoint: str | None = None) -> DecodedClips:
    """Step 1: the clips of ``row``'s video (``row.path`` may be an ``s3://`` URI; ``endpoint``: a
    custom S3 endpoint): raises :class:`SkipVideo` with the :class:`.video.VideoError` reason."""
    try:
        return decode_clips(FsPath.of(row.path, endpoint), cfg.clip_len, cfg.clips_per_video, cfg.stride, cfg.audio,
                            cfg.sync)
    except VideoError as exc:
        raise SkipVideo(exc.reason, exc.detail) from None


def probe_frames(decoded: DecodedClips, probes: int) -> list[tuple[int, int]]:
    """``(clip, frame within clip)`` of every probe frame of a video's clips."""
    return [(c, i) for c, frames in enumerate(decoded.frames) for i in probe_indices(len(frames), probes)]


def detect_faces(decoded: DecodedClips, detector: FaceDetector, probes: int = 1) -> list[list[list[Box]]]:
    """Step 2: per clip, per probe frame, the detected boxes (frame pixels). When no probe shows a
    face, every decoded frame is searched (one batch) before giving up."""
    where = probe_frames(decoded, probes)
    found = _detect(detector, [decoded.frames[c][i] for c, i in where])
    if not any(found):
        where = [(c, i) for c, frames in enumerate(decoded.frames) for i in range(len(frames))]
        found = _detect(detector, [decoded.frames[c][i] for c, i in where])
    per_clip: list[list[list[Box]]] = [[] for _ in decoded.frames]
    for (c, _), boxes in zip(where, found):
        per_clip[c].append(boxes)
    _search_near_tracks(decoded, detector, probes, per_clip)
    return per_clip


def _search_near_tracks(decoded: DecodedClips, detector: FaceDetector, probes: int,
                        per_clip: list[list[list[Box]]]) -> None:
    """Where a face seen in other clips was missed, search the clip's probes again near the face's
    nearest box (:meth:`.faces.DownscaledDetector.detect_near`: a region rescaled to a small face,
    which finds dark or small faces a full-frame search misses); adds what it finds to ``per_clip``."""
    near = getattr(detector, "detect_near", None)
    if near is None:
        return
    for track in face_tracks(per_clip, max_faces=len(per_clip) * 4, min_coverage=0.0, fill=False):
        seen = [c for c, b in enumerate(track) if b is not None]
        for c, box in enumerate(track):
            if box is None:
                ref = track[min(seen, key=lambda s: (abs(s - c), s))]
                assert ref is not None
                frames = decoded.frames[c]
                for j, i in enumerate(probe_indices(len(frames), probes)):
                    per_clip[c][j] = per_clip[c][j] + near(frames[i], ref)


def _detect(detector: FaceDetector, frames: list[np.ndarray]) -> list[list[Box]]:
    batch = getattr(detector, "detect_batch", None)
    return batch(frames) if batch is not None else [detector.detect(f) for f in frames]


def clip_rows(row: ManifestRow, decoded: DecodedClips, detections: list[list[list[Box]]], cfg: ClipConfig,
              endpoint: str | None = None) -> ClipResult:
    """Step 3: one row per (face track, clip): crops, stage filter, per-face label.

    Raises :class:`SkipVideo` (``"no face"``) when no face track is found.
    """
    tracks = face_tracks(detections, cfg.max_faces, cfg.min_coverage, fill=False)
    if not tracks:
        raise SkipVideo("no face", f"no face in {len(decoded.frames)} clip(s)")
    notes: list[str] = []
    if cfg.audio is not None and not decoded.info.has_audio:
        notes.append(NOTE_NO_AUDIO)
    borrowed = sum(b is None for t in tracks for b in t)
    if borrowed:
        notes.append(f"{borrowed} of {len(tracks) * len(decoded.frames)} face clip(s) without a detection "
                     "used the face's nearest clip's box")
    filled = [[b for b in fill_missing(t) if b is not None] for t in tracks]
    labels, note = label_faces(row, decoded, filled, endpoint)
    if note:
        notes.append(note)
    # in training, an unchanged face of a fake repeats its original's clips: left out (val and test
    # keep every face, so that a video is scored as a user's video would be)
    skip = {f for f, label in enumerate(labels) if row.split == "train" and row.label == 1 and label == 0}
    if skip:
        notes.append(f"unchanged face(s) {sorted(skip)} of a training fake left out")
    manifest = row.to_dict()
    rows = []
    for face, (boxes, label) in enumerate(zip(filled, labels)):
        if face in skip:
            continue
        sync = face_sync(decoded, boxes, cfg.sync)
        for k, (frames, box) in enumerate(zip(decoded.frames, boxes)):
            crops, crop_box = crop_face(frames, box, cfg.size, cfg.margin)
            centre = frames[len(frames) // 2]  # the grid patch and the lighting cues: before the filter
            grid = grid_patch(centre, box.as_list(), cfg.grid_size)
            light = lighting_cues(centre, box.as_list()) if cfg.lighting else None
            crops = apply_filter(crops, cfg.preprocessing)
            audio = decoded.audio[k] if decoded.audio is not None else None
            rows.append(make_row({**manifest, "label": label}, k, crops, audio, crop_box, cfg.preprocessing.value,
                                 face_index=face, grid=grid, sync=None if sync is None else sync[k], lighting=light))
    return ClipResult(rows, notes, len(tracks))


def face_sync(decoded: DecodedClips, boxes: list[Box], cfg: SyncConfig | None) -> list[np.ndarray] | None:
    """One face's sync curves (:func:`.sync.sync_curves`), one per clip, or ``None`` without sync
    settings, audio or kept grey frames. The face box of a frame between clips is interpolated
    between the clips' boxes (held beyond the first and last clip)."""
    if cfg is None or decoded.audio_track is None or not decoded.grey:
        return None
    fps = decoded.info.fps if decoded.info.fps > 0 else 25.0
    centres = np.array([(t0 + t1) / 2 for t0, t1 in decoded.times])
    coords = np.array([b.as_list() for b in boxes], dtype=np.float64)
    kept = np.array(sorted(decoded.grey))
    per_frame = np.stack([np.interp(kept / fps, centres, coords[:, j]) for j in range(4)], axis=1)
    idx, feats = mouth_features(decoded.grey, decoded.grey_scale, dict(zip(kept.tolist(), per_frame)))
    duration = decoded.info.num_frames / fps
    # a frame stands for [i / fps, (i + 1) / fps): its mouth is compared with the audio at its middle
    return [sync_curves((idx + 0.5) / fps, feats, decoded.audio_track, decoded.audio_cols_per_s,
                        sync_window(c, duration, cfg), cfg) for c in centres]


def extract_clips_with_notes(
    row: ManifestRow, cfg: ClipConfig, detector: FaceDetector | None = None, endpoint: str | None = None
) -> ClipResult:
    """The three steps in sequence (inference, benchmarks): rows, notes and face count of the
    video of ``row`` (``row.path`` may be an ``s3://`` URI)."""
    detector = detector or cfg.make_detector()
    decoded = decode_video(row, cfg, endpoint)
    return clip_rows(row, decoded, detect_faces(decoded, detector, cfg.probes), cfg, endpoint)


def extract_clips(row: ManifestRow, cfg: ClipConfig, detector: FaceDetector | None = None) -> list[dict[str, Any]]:
    """Clip rows (shard schema, one per face and clip) of the video of ``row``.

    Args:
        row: the video's manifest row (for inference, any row with the video's ``path``).
        cfg: clip settings.
        detector: a face detector; default ``cfg.make_detector()`` (pass one to reuse it).

    Raises:
        SkipVideo: the video gives no clip (missing, unreadable, too short, no face).
    """
    return extract_clips_with_notes(row, cfg, detector).rows
