"""A talking-face video: the canonical face moved per frame over the background, its face boxes and
its voice track."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import cv2
import numpy as np

from .config import _stable
from .face import _Canvas, _draw_mouth, _render_canvas
from .scenes import Identity, Scene, render_background


@dataclass
class Rendered:
    """A rendered video plus what manipulations and truth files need."""

    frames: np.ndarray
    """(N, H, W, 3) uint8 RGB."""
    audio: np.ndarray
    """Mono float32 audio in [-1, 1] at the scene's sample rate."""
    boxes: np.ndarray
    """(N, 4) float32 face boxes ``[x0, y0, x1, y1]`` in frame pixels."""
    face_masks: np.ndarray
    """(N, H, W) uint8 face-skin masks (255 inside)."""
    clean: np.ndarray
    """(N, H, W, 3) float32 frames before capture noise (used to composite fakes)."""
    mouth: np.ndarray
    """(N,) mouth opening per frame."""
    exposure: float = 1.0
    """Camera gain applied to the whole frame."""


#: Face box relative to the face ellipse (centre offset and size in face half-widths/heights),
#: calibrated against OpenCV's frontal-face Haar cascade on these renders.
_BOX_DY = 0.04  # box centre below the ellipse centre, in face half-heights
_BOX_W = 1.2  # box half-size, in face half-widths


def _affines(scene: Scene, cv: _Canvas) -> list[np.ndarray]:
    """Canvas -> frame affine matrices (rotation, scale, translation) per frame."""
    t = np.arange(scene.num_frames) / scene.fps
    ch = [amp * np.sin(2 * math.pi * f * t + ph) for amp, f, ph in scene.motion]
    dx, dy, ang, sc = ch[0] * (scene.person_width or scene.width), ch[1] * scene.height, ch[2], 1.0 + ch[3]
    out = []
    for i in range(scene.num_frames):
        M = cv2.getRotationMatrix2D((cv.cx, cv.cy), float(ang[i]), float(sc[i]))
        M[0, 2] += scene.cx * scene.width + dx[i] - cv.cx
        M[1, 2] += scene.cy * scene.height + dy[i] - cv.cy
        out.append(M)
    return out


def _face_box(M: np.ndarray, cv: _Canvas) -> np.ndarray:
    scale = float(np.hypot(M[0, 0], M[0, 1]))
    centre = M @ np.array([cv.cx, cv.cy + _BOX_DY * cv.b, 1.0])
    half = _BOX_W * cv.a * scale
    return np.array([centre[0] - half, centre[1] - half, centre[0] + half, centre[1] + half], np.float32)


def _auto_exposure(cv: _Canvas) -> float:
    """The camera gain that exposes the canvas's face well (dark skin is not rendered nearly black)."""
    lum = cv.rgb[cv.face > 128].astype(np.float32) @ np.array([0.3, 0.59, 0.11], np.float32)
    return _stable(np.clip(0.45 * 255.0 / max(float(lum.mean(dtype=np.float64)), 1.0), 1.0, 1.8))


def _layers(ident: Identity, scene: Scene, cv: _Canvas, mouth: np.ndarray, tint_arr: np.ndarray
            ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Per frame: the person warped into the frame, ``(H, W, 5)`` uint8 (RGB, person alpha, face
    mask), and its face box."""
    stack = np.dstack([cv.rgb, cv.alpha, cv.face])
    for i, M in enumerate(_affines(scene, cv)):
        layer = stack.copy()
        rgb = np.ascontiguousarray(layer[..., :3])
        _draw_mouth(rgb, ident, cv, float(mouth[i]), tint_arr)
        layer[..., :3] = rgb
        warped = cv2.warpAffine(layer, M, (scene.width, scene.height), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_CONSTANT)
        yield warped, _face_box(M, cv)


def _voice(ident: Identity, scene: Scene, mouth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A voiced tone + breath noise whose amplitude follows the mouth opening."""
    sr = scene.sample_rate
    n = int(round(scene.num_frames / scene.fps * sr))
    t = np.arange(n, dtype=np.float64) / sr
    frame_t = (np.arange(scene.num_frames) + 0.5) / scene.fps
    env = np.interp(t, frame_t, mouth)
    f0 = ident.f0 * (1 + 0.04 * np.sin(2 * np.pi * rng.uniform(0.5, 2.0) * t + rng.uniform(0, 6.3)))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    voiced = sum(np.sin(k * phase) / k for k in range(1, 7))
    noise = rng.standard_normal(n)
    noise = np.convolve(noise, np.ones(4) / 4, mode="same")
    sig = env * (0.55 * voiced / 1.5 + 0.25 * noise)
    room = 0.004 * rng.standard_normal(n)
    return np.clip(sig * 0.8 + room, -1, 1).astype(np.float32)


def render(ident: Identity, scene: Scene, *, light: tuple[float, float, float] | None = None,
           tint: tuple[float, float, float] | None = None, background: np.ndarray | None = None,
           with_face: bool = True, exposure: float | None = None) -> Rendered:
    """Render a talking-face video of ``ident`` in ``scene``.

    ``light``/``tint`` override the face's light (used by the lighting fake; the background keeps
    the scene's light). ``with_face=False`` renders the background only (boxes are NaN). The
    camera's auto-exposure brightens the frame so that the face is well exposed (dark skin is
    not rendered nearly black); ``exposure`` fixes that gain instead (used to render a swap
    source under its target's exposure).
    """
    rng = np.random.default_rng(scene.seed + 1)
    bg = render_background(scene) if background is None else background
    mouth = np.array(scene.mouth, np.float32)
    n, H, W = scene.num_frames, scene.height, scene.width
    clean = np.empty((n, H, W, 3), np.float32)
    masks = np.zeros((n, H, W), np.uint8)
    boxes = np.full((n, 4), np.nan, np.float32)
    if with_face:
        cv = _render_canvas(ident, scene, light, tint)
        exposure = _auto_exposure(cv) if exposure is None else exposure
        tint_arr = np.array(tint if tint is not None else scene.light_tint, np.float32)
        for i, (warped, box) in enumerate(_layers(ident, scene, cv, mouth, tint_arr)):
            al = warped[..., 3:4].astype(np.float32) / 255.0
            clean[i] = np.minimum((bg * (1 - al) + warped[..., :3].astype(np.float32) / 255.0 * al) * exposure, 1.0)
            masks[i] = warped[..., 4]
            boxes[i] = box
    else:
        clean[:] = np.minimum(bg * (exposure or 1.0), 1.0)
    noise = rng.standard_normal((n, H, W, 3)).astype(np.float32) * (scene.noise_sigma / 255.0)
    frames = np.clip((clean + noise) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    audio = _voice(ident, scene, mouth if with_face else np.zeros_like(mouth), rng)
    return Rendered(frames=frames, audio=audio, boxes=boxes, face_masks=masks, clean=clean, mouth=mouth,
                    exposure=exposure or 1.0)
