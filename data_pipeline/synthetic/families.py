"""Capture (normal or low light) of a rendered real and the manipulation families that derive fakes
from it."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable

import cv2
import numpy as np

from .config import FAMILIES, _stable
from .rendering import _BOX_W, Rendered, render
from .scenes import Identity, Scene

# =============================================================================== capture + fakes


@dataclass(frozen=True)
class LowLight:
    """A dark, noisy capture: ``gain * x ** gamma`` plus luminance and chroma noise."""

    gamma: float
    gain: float
    noise: float
    """Luminance noise sigma (0-255 scale)."""
    tint: tuple[float, float, float]


def make_low_light(rng: np.random.Generator) -> LowLight:
    """Draw low-light capture settings (dark but with the face still findable)."""
    return LowLight(
        gamma=float(rng.uniform(1.5, 1.9)),
        gain=float(rng.uniform(0.5, 0.65)),
        noise=float(rng.uniform(4.0, 6.5)),
        tint=(float(rng.uniform(0.85, 0.95)), float(rng.uniform(0.9, 1.0)), 1.0),
    )


def _darken(clean: np.ndarray, ll: LowLight) -> np.ndarray:
    """Low-light tone curve on float frames in [0, 1] (no noise)."""
    return (ll.gain * np.power(np.clip(clean, 0, 1), ll.gamma)) * np.array(ll.tint, np.float32)


def _sensor_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Luminance + half-strength chroma noise, float32 on the [0, 1] scale."""
    lum = rng.standard_normal(shape[:-1] + (1,)).astype(np.float32)
    chroma = rng.standard_normal(shape).astype(np.float32) * 0.5
    return (lum + chroma) * (sigma / 255.0)


def _to_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _feather(mask_u8: np.ndarray, erode_px: int = 0, blur_px: float = 1.0) -> np.ndarray:
    """A (N, H, W) uint8 mask -> float32 (N, H, W, 1) blending weights, eroded then feathered."""
    out = np.empty(mask_u8.shape + (1,), np.float32)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * erode_px + 1,) * 2) if erode_px > 0 else None
    for i, m in enumerate(mask_u8):
        m = cv2.erode(m, kernel) if kernel is not None else m
        m = m.astype(np.float32) / 255.0
        out[i, ..., 0] = cv2.GaussianBlur(m, (0, 0), blur_px) if blur_px > 0 else m
    return out


def _box_slices(box: np.ndarray, scale: float, h: int, w: int) -> tuple[slice, slice]:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    half = (box[2] - box[0]) / 2 * scale
    x0, y0 = max(0, int(cx - half)), max(0, int(cy - half))
    x1, y1 = min(w, int(math.ceil(cx + half))), min(h, int(math.ceil(cy + half)))
    return slice(y0, y1), slice(x0, x1)


def _face_swap(frames: np.ndarray, real: Rendered, src: Rendered, rng: np.random.Generator,
               capture: Callable[[np.ndarray], np.ndarray], blur: float = 1.0) -> np.ndarray:
    """Paste the source identity's inner face (same pose, mouth and light) over the target.

    The pasted region keeps a hard, visible seam (little feathering, a dark or bright halo along
    it), gets no colour correction (plus a random colour cast), and is smoother and noise-free
    like a generated face. ``capture`` maps the source's clean frames to the target's capture."""
    a_px = _stable(np.nanmean(real.boxes[:, 2] - real.boxes[:, 0], dtype=np.float64) / (2 * _BOX_W))
    m = _feather(real.face_masks, erode_px=max(1, int(round(0.18 * a_px))), blur_px=0.6)
    # a colour cast of 12-20 % per channel (random direction) on top of the skin-tone difference
    cast = (1.0 + rng.choice([-1.0, 1.0], 3) * rng.uniform(0.12, 0.2, 3)).astype(np.float32)
    gen = np.stack([cv2.GaussianBlur(f, (0, 0), blur) for f in src.clean]) * cast
    gen = capture(gen)
    # a blending halo: a thin darker or brighter line along the pasted region's boundary
    soft = _feather(real.face_masks, erode_px=max(1, int(round(0.18 * a_px))), blur_px=1.5)
    halo = 1.0 + rng.choice([-1.0, 1.0]) * rng.uniform(0.2, 0.3) * 4.0 * soft * (1.0 - soft)
    return (frames * (1 - m) + gen * m) * halo


def _double_compression(frames: np.ndarray, real: Rendered, rng: np.random.Generator) -> np.ndarray:
    """The face area JPEG-compressed at a low quality before the final encode, on the frame's codec
    grid (the region's corner on a multiple of 16: the JPEG's 8x8 luma blocks and 16x16 4:2:0 MCUs
    fall where the video codec's blocks do, as when a whole frame is compressed twice)."""
    n, H, W = real.frames.shape[:3]
    out = frames.copy()
    quality = int(rng.integers(7, 12))
    for i in range(n):
        ys, xs = _box_slices(real.boxes[i], 1.25, H, W)
        ys, xs = slice(ys.start // 16 * 16, ys.stop), slice(xs.start // 16 * 16, xs.stop)
        crop = cv2.cvtColor(real.frames[i, ys, xs], cv2.COLOR_RGB2BGR)
        ok, buf = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, quality])
        assert ok
        dec = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        out[i, ys, xs] = dec.astype(np.float32) / 255.0
    return out


def _resolution_mismatch(frames: np.ndarray, real: Rendered, rng: np.random.Generator) -> np.ndarray:
    """The face downscaled x3-4 and upscaled back: a blurry face on a sharp, noisy frame."""
    n, H, W = real.frames.shape[:3]
    factor = float(rng.uniform(3.0, 4.0))
    m = _feather(real.face_masks, erode_px=0, blur_px=1.0)
    low = np.empty_like(frames)
    for i in range(n):
        small = cv2.resize(frames[i], (max(4, int(W / factor)), max(4, int(H / factor))), interpolation=cv2.INTER_AREA)
        low[i] = cv2.resize(small, (W, H), interpolation=cv2.INTER_LINEAR)
    return frames * (1 - m) + low * m


def _temporal_flicker(frames: np.ndarray, real: Rendered, rng: np.random.Generator) -> np.ndarray:
    """Per-frame jitter of the face's position, gain and colour."""
    n, H, W = real.frames.shape[:3]
    m = _feather(real.face_masks, erode_px=0, blur_px=1.0)
    out = np.empty_like(frames)
    for i in range(n):
        dx, dy = rng.uniform(-3.0, 3.0, 2)
        M = np.float32([[1, 0, dx], [0, 1, dy]])
        moved = cv2.warpAffine(frames[i], M, (W, H), borderMode=cv2.BORDER_REFLECT)
        gain = rng.uniform(0.82, 1.18) * rng.uniform(0.93, 1.07, 3).astype(np.float32)
        out[i] = frames[i] * (1 - m[i]) + moved * gain * m[i]
    return out


def _lighting_inconsistency(frames: np.ndarray, real: Rendered, ident: Identity, scene: Scene,
                            rng: np.random.Generator, low_light: LowLight | None) -> np.ndarray:
    """The face re-rendered lit from the opposite side in the opposite colour temperature."""
    lx, ly, _ = scene.light_dir
    side = -1.0 if lx >= 0 else 1.0
    relight = (side * rng.uniform(0.75, 0.9), -ly * rng.uniform(0.5, 1.0), float(rng.uniform(0.45, 0.6)))
    warm = 1.0 if scene.light_tint[0] < 1.0 else -1.0  # the opposite colour temperature
    tint = (1.0 + 0.4 * warm, 1.0, 1.0 - 0.42 * warm)
    # side light from the other side (low ambient), in another colour temperature, at about
    # the original face brightness (so that the face stays findable)
    relit = render(ident, replace(scene, ambient=0.25), light=relight, tint=tint, exposure=real.exposure)
    m = _feather(real.face_masks, erode_px=0, blur_px=0.8)
    inside = real.face_masks > 128
    ratio = real.clean[inside].mean(dtype=np.float64) / max(float(relit.clean[inside].mean(dtype=np.float64)), 1e-3)
    gain = _stable(ratio) * rng.uniform(0.95, 1.1)
    face = relit.clean * gain
    face = face if low_light is None else _darken(face, low_light)
    noise = _sensor_noise(rng, frames.shape, scene.noise_sigma)
    return frames * (1 - m) + (face + noise) * m


def _lip_sync_shift(real: Rendered, scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """The audio shifted by the 0.3-0.5 s (either way) that decorrelates loudness and mouth most."""
    n = real.frames.shape[0]
    audio = real.audio
    sr = scene.sample_rate
    frame_t = (np.arange(n) + 0.5) / scene.fps
    env = np.abs(audio)
    best: tuple[float, int] | None = None
    for shift_s in np.concatenate([np.linspace(0.3, 0.5, 5), -np.linspace(0.3, 0.5, 5)]):
        k = int(round(shift_s * sr))
        shifted = np.roll(env, k)
        loud = np.array([shifted[int(t * sr) - sr // 30 : int(t * sr) + sr // 30].mean(dtype=np.float64) for t in frame_t])
        c = _stable(np.corrcoef(loud, real.mouth)[0, 1]) if real.mouth.std() > 0 else 0.0
        if best is None or c < best[0]:
            best = (c, k)
    assert best is not None
    k = best[1]
    shifted = np.roll(audio, k)
    fill = (0.004 * rng.standard_normal(abs(k))).astype(np.float32)
    if k > 0:
        shifted[:k] = fill
    elif k < 0:
        shifted[k:] = fill
    return shifted


def apply_family(family: str, real: Rendered, ident: Identity, scene: Scene, rng: np.random.Generator,
                 source: Identity | None = None, low_light: LowLight | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Derive a fake ``(frames uint8, audio)`` of ``family`` from a rendered real.

    ``source`` is the other identity for swap-based families; ``low_light`` is the capture of a
    low-light real (its frames already carry it; the ``low_light`` family needs it).
    """
    frames = real.frames.astype(np.float32) / 255.0
    audio = real.audio
    if family == "face_swap":
        assert source is not None
        src = render(source, scene, exposure=real.exposure)
        out = _face_swap(frames, real, src, rng, capture=lambda x: x)
    elif family == "low_light":
        assert source is not None and low_light is not None
        src = render(source, scene, exposure=real.exposure)
        ll = low_light
        # a generated face is smooth: no sensor noise and little detail, unlike the rest of the
        # dark frame
        out = _face_swap(frames, real, src, rng, capture=lambda x: _darken(x, ll), blur=1.6)
    elif family == "double_compression":
        out = _double_compression(frames, real, rng)
    elif family == "resolution_mismatch":
        out = _resolution_mismatch(frames, real, rng)
    elif family == "temporal_flicker":
        out = _temporal_flicker(frames, real, rng)
    elif family == "lighting_inconsistency":
        out = _lighting_inconsistency(frames, real, ident, scene, rng, low_light)
    elif family == "lip_sync_shift":
        return real.frames.copy(), _lip_sync_shift(real, scene, rng)
    else:
        raise ValueError(f"unknown family {family!r}; known: {FAMILIES}")
    return _to_u8(out), audio


def capture(ident: Identity, scene: Scene, low_light: LowLight | None = None) -> Rendered:
    """Render a real video, optionally through a low-light capture (dark tone curve + noise)."""
    r = render(ident, scene)
    if low_light is not None:
        rng = np.random.default_rng(scene.seed + 2)
        dark = _darken(r.clean, low_light)
        r.frames = _to_u8(dark + _sensor_noise(rng, dark.shape, low_light.noise))
        r.clean = dark
    return r
