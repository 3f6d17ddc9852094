"""Audio-visual synchrony: the AV specialist's sync input, one set of curves per (face, clip).

Lip-sync detectors compare mouth motion with the audio over a range of time offsets (SyncNet,
Chung and Zisserman 2016: +-15 frames at 25 fps; AVAD). A shifted voice still follows a mouth,
but at the wrong time: its correlation with the mouth peaks away from zero offset, or nowhere.
An AV window of a clip's own 0.16 s cannot see that; this module looks at ``window_s`` (1 s)
around each clip against audio ``max_offset_s`` (0.6 s) either side.

For each face and clip:

1. :func:`mouth_features`: the mouth region of the face box (the box's lower-middle part) in
   every decoded frame of the window, from grey frames kept at a reduced size during decoding
   (:class:`SyncConfig.max_side`), as a ``12 x 24`` patch; three features per frame: darkness (an
   open mouth shows its dark interior), vertical edge energy (parted lips) and motion (mean
   absolute change from the previous frame).
2. :func:`audio_features`: from the video's log-mel spectrogram, five features per step:
   log energy in all bands, in the low, middle and high thirds of the bands, and the energy's
   change (onsets).
3. :func:`sync_curves`: the Pearson correlation of every (mouth feature, audio feature) pair, both
   resampled to ``rate`` steps per second, at every offset ``-K..K`` steps (``K = max_offset_s *
   rate``; positive: the audio is later than the mouth). Pairs whose audio time falls outside the
   track are left out of that offset's correlation.

The result, ``(3 * 5, 2K + 1)`` float32 (15 x 31 with the defaults: 1.9 KB per clip), is the
shard's ``sync`` column; the AV model encodes it as one more token (``specialists/model.py``).
The mouth features are hand-made, not learnt (SyncNet's are): the curves' *shape* is what the
network learns from, which a from-scratch model on a few hundred videos can.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

__all__ = ["AUDIO_FEATURES", "MOUTH_FEATURES", "SyncConfig", "audio_features", "grey_frame", "grey_size",
           "mouth_box", "mouth_features", "sync_curves", "sync_window", "window_frames"]

MOUTH_FEATURES = ("darkness", "vertical_edges", "motion")
AUDIO_FEATURES = ("energy", "low", "mid", "high", "onset")
#: the mouth patch every frame's mouth region is resized to (rows, columns)
PATCH = (12, 24)


@dataclass
class SyncConfig:
    """Settings of the AV sync input.

    Attributes:
        rate: steps per second of the mouth and audio tracks (SyncNet's 25).
        window_s: seconds of mouth track per clip, centred on the clip (moved inside short videos).
        max_offset_s: the audio is compared at offsets up to this many seconds either way.
        max_side: decoded frames are kept in grey, downscaled to at most this long side, for the
            mouth crops (a 1080p frame: 320x180, 58 KB; its face, 200-400 px, becomes 60-120 px).
    """

    rate: float = 25.0
    window_s: float = 1.0
    max_offset_s: float = 0.6
    max_side: int = 320

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.window_s <= 0 or self.max_offset_s < 0 or self.max_side < 32:
            raise ValueError(f"SyncConfig needs rate > 0, window_s > 0, max_offset_s >= 0 and max_side >= 32, "
                             f"got {asdict(self)}")

    @property
    def steps(self) -> int:
        """Steps of a clip's mouth track."""
        return max(2, int(round(self.window_s * self.rate)))

    @property
    def max_offset(self) -> int:
        """K: offsets run over ``-K..K`` steps."""
        return int(round(self.max_offset_s * self.rate))

    @property
    def shape(self) -> tuple[int, int]:
        """``(curves, offsets)`` of one clip's sync input."""
        return len(MOUTH_FEATURES) * len(AUDIO_FEATURES), 2 * self.max_offset + 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sync_window(centre_s: float, duration_s: float, cfg: SyncConfig) -> tuple[float, float]:
    """``(t0, t1)``: ``window_s`` seconds centred on ``centre_s``, moved inside ``[0, duration_s]``
    (the whole video when it is shorter)."""
    span = min(cfg.window_s, max(duration_s, 1e-6))
    t0 = min(max(centre_s - span / 2, 0.0), max(duration_s - span, 0.0))
    return t0, t0 + span


def grey_size(width: int, height: int, max_side: int) -> tuple[int, int, float]:
    """``(w, h, scale)`` of the grey frames kept for the mouth crops (never upscaled)."""
    scale = min(1.0, max_side / max(width, height, 1))
    return max(1, int(round(width * scale))), max(1, int(round(height * scale))), scale


#: pixel formats whose first plane is the luma, read as the grey frame without a conversion
_LUMA_FIRST = {"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "nv12", "gray"}


def grey_frame(frame: Any, width: int, height: int) -> np.ndarray:
    """A decoded PyAV video frame's luma as ``(height, width)`` uint8 (the Y plane itself for YUV
    video, a swscale conversion otherwise; area-downscaled when smaller)."""
    if frame.format.name in _LUMA_FIRST:
        plane = frame.planes[0]
        y = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[:, : plane.width]
    else:
        y = frame.to_ndarray(format="gray")
    if y.shape == (height, width):
        return y.copy()
    return cv2.resize(np.ascontiguousarray(y), (width, height), interpolation=cv2.INTER_AREA)


def window_frames(clip_indices: Sequence[Sequence[int]], num_frames: int, fps: float, cfg: SyncConfig) -> set[int]:
    """Indices of the frames of every clip's sync window (one frame of margin either side), for
    clips given by their frame indices in a video of ``num_frames`` frames at ``fps``."""
    wanted: set[int] = set()
    duration = num_frames / fps
    for idx in clip_indices:
        t0, t1 = sync_window((idx[0] + idx[-1] + 1) / 2 / fps, duration, cfg)
        wanted.update(range(max(int(t0 * fps) - 1, 0), min(int(math.ceil(t1 * fps)) + 2, num_frames)))
    return wanted


def mouth_box(face_box: Sequence[float]) -> tuple[float, float, float, float]:
    """The mouth region of a detector's face box ``[x0, y0, x1, y1]``: the middle half of its
    width, from 60% to 95% of its height (Haar's and MTCNN's boxes both end near the chin)."""
    x0, y0, x1, y1 = (float(v) for v in face_box)
    w, h = x1 - x0, y1 - y0
    return x0 + 0.25 * w, y0 + 0.60 * h, x1 - 0.25 * w, y0 + 0.95 * h


def _patch(grey: np.ndarray, box: tuple[float, float, float, float], scale: float) -> np.ndarray:
    h, w = grey.shape
    x0, y0, x1, y1 = (v * scale for v in box)
    xa, ya = min(max(int(math.floor(x0)), 0), w - 1), min(max(int(math.floor(y0)), 0), h - 1)
    xb, yb = max(min(int(math.ceil(x1)), w), xa + 1), max(min(int(math.ceil(y1)), h), ya + 1)
    region = np.ascontiguousarray(grey[ya:yb, xa:xb])
    return cv2.resize(region, PATCH[::-1], interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def mouth_features(grey: Mapping[int, np.ndarray], scale: float, boxes: Mapping[int, Sequence[float]]
                   ) -> tuple[np.ndarray, np.ndarray]:
    """``(frame indices (n,), features (n, 3))`` of the mouth in the grey frames ``grey`` (index ->
    ``(h, w)`` uint8, ``scale`` times the frame size), with ``boxes`` giving the face box (frame
    pixels) of every one of those frames. Motion is the change from the previous kept frame (0 for
    the first, and after a gap)."""
    idx = np.array(sorted(grey), dtype=np.int64)
    feats = np.zeros((len(idx), len(MOUTH_FEATURES)), np.float32)
    prev: tuple[int, np.ndarray] | None = None
    for n, i in enumerate(idx):
        p = _patch(grey[int(i)], mouth_box(boxes[int(i)]), scale)
        feats[n, 0] = 1.0 - p.mean()
        feats[n, 1] = np.abs(np.diff(p, axis=0)).mean()
        if prev is not None and prev[0] == i - 1:
            feats[n, 2] = np.abs(p - prev[1]).mean()
        prev = (int(i), p)
    if len(idx) > 1 and feats[0, 2] == 0:
        feats[0, 2] = feats[1, 2]
    return idx, feats


def audio_features(logmel: np.ndarray, cols_per_s: float) -> np.ndarray:
    """``(n_cols, 5)`` float32 per log-mel column: log energy of all bands, of each third of the
    bands, and the absolute change of the total over 40 ms (onsets)."""
    power = np.exp(logmel.astype(np.float64))
    thirds = np.array_split(np.arange(logmel.shape[0]), 3)
    parts = [power.sum(axis=0)] + [power[t].sum(axis=0) for t in thirds]
    feats = np.log(np.stack(parts, axis=1) + 1e-6)
    lag = max(1, int(round(0.04 * cols_per_s)))
    onset = np.zeros(len(feats))
    onset[lag:] = np.abs(feats[lag:, 0] - feats[:-lag, 0])
    return np.concatenate([feats, onset[:, None]], axis=1).astype(np.float32)


def _smooth_at(series: np.ndarray, cols_per_s: float, times: np.ndarray, half_s: float) -> np.ndarray:
    """Mean of ``series`` (columns centred at ``j / cols_per_s``) over ``t +- half_s`` for every
    ``t`` in ``times``; NaN where ``t`` lies outside the series."""
    n = len(series)
    csum = np.concatenate([np.zeros((1, series.shape[1])), np.cumsum(series, axis=0)])
    lo = np.clip(np.round((times - half_s) * cols_per_s).astype(np.int64), 0, n)
    hi = np.clip(np.round((times + half_s) * cols_per_s).astype(np.int64) + 1, 0, n)
    hi = np.maximum(hi, np.minimum(lo + 1, n))
    out = (csum[hi] - csum[lo]) / np.maximum(hi - lo, 1)[:, None]
    outside = (times < -0.5 / cols_per_s) | (times > (n - 0.5) / cols_per_s)
    out[outside] = np.nan
    return out


def _interp(frame_times: np.ndarray, values: np.ndarray, times: np.ndarray) -> np.ndarray:
    return np.stack([np.interp(times, frame_times, values[:, k]) for k in range(values.shape[1])], axis=1)


def sync_curves(frame_times: np.ndarray, mouth: np.ndarray, audio: np.ndarray | None, cols_per_s: float,
                window: tuple[float, float], cfg: SyncConfig) -> np.ndarray:
    """The ``(15, 2K + 1)`` sync input of one clip: Pearson correlation of every (mouth feature,
    audio feature) pair over the window's steps, at every offset (the audio read ``o / rate`` s
    later than the mouth). ``frame_times``/``mouth``: :func:`mouth_features` of the frames around
    the window (seconds, features); ``audio``: :func:`audio_features` of the whole track, or
    ``None`` (all zeros). Offsets with fewer than 4 usable steps, and constant features, give 0."""
    m_count, a_count = len(MOUTH_FEATURES), len(AUDIO_FEATURES)
    out = np.zeros((m_count * a_count, 2 * cfg.max_offset + 1), np.float32)
    if audio is None or len(frame_times) < 2 or len(audio) == 0:
        return out
    t0, t1 = window
    steps = max(2, int(round((t1 - t0) * cfg.rate)))
    times = t0 + (np.arange(steps) + 0.5) * (t1 - t0) / steps
    m = _interp(frame_times, mouth, times)  # (steps, 3)
    offsets = np.arange(-cfg.max_offset, cfg.max_offset + 1)
    at = (times[None, :] + offsets[:, None] / cfg.rate).reshape(-1)
    a = _smooth_at(audio, cols_per_s, at, 0.5 / cfg.rate).reshape(len(offsets), steps, a_count)
    ok = ~np.isnan(a).any(axis=2)  # (offsets, steps)
    w = ok.astype(np.float64)
    n = w.sum(axis=1)  # usable steps per offset
    a = np.where(ok[..., None], a, 0.0)
    # weighted Pearson correlation per offset: only the usable steps count
    nn = np.maximum(n, 1)[:, None]
    m_mean = (w @ m) / nn  # (offsets, 3)
    a_mean = a.sum(axis=1) / nn  # (offsets, 5)
    mz = (m[None] - m_mean[:, None]) * w[..., None]  # (offsets, steps, 3)
    az = (a - a_mean[:, None]) * w[..., None]
    cov = np.einsum("osm,osa->oma", mz, az)
    denom = np.sqrt(np.einsum("osm,osm->om", mz, mz))[:, :, None] * np.sqrt(np.einsum("osa,osa->oa", az, az))[:, None, :]
    corr = np.where(denom > 1e-9, cov / np.maximum(denom, 1e-12), 0.0)
    corr[n < 4] = 0.0
    out[:] = corr.reshape(len(offsets), m_count * a_count).T
    return out
