"""A real face on video, with per-frame ground-truth boxes: the photograph matplotlib ships.

:func:`make_real_face_video` pastes ``grace_hopper.jpg`` (a 512x600 colour portrait, in every
matplotlib install) onto a larger textured, noisy background, moving it smoothly across the frame
while its size changes (and optionally rotated in-plane, squeezed horizontally like a turned head,
or darkened), writes an H.264 mp4 (with an AAC tone when asked) and returns the face box of every
frame. The face was annotated once on the photo (:data:`PHOTO_FACE_BOX`); each frame's truth is
that box carried through the frame's affine map (see :func:`face_box`).

Used by ``tests/data_pipeline/test_faces.py`` (a short low-fps clip) and by
``benchmarks/detector_recall.py`` / ``benchmarks/detect_speed.py`` (720p / 1080p variants).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import av
import cv2
import numpy as np

from data_pipeline.faces import Box

#: The face in the photo, ``(x0, y0, x1, y1)`` in its own pixels (512 wide, 600 high), annotated by
#: eye on 3x zooms of the photo with a pixel grid: left/right at the outer edge of the glasses and
#: cheeks (x 172 / 358; the hair and ears beyond are left out), top at the hat's brim where the
#: forehead starts (y 130), bottom at the chin (y 325). For reference, on the still photo Haar finds
#: (150, 102, 379, 331) (IoU 0.66 with this box) and MTCNN (174, 115, 353, 340) (IoU 0.85).
PHOTO_FACE_BOX = (172.0, 130.0, 358.0, 325.0)


@lru_cache(maxsize=1)
def photo() -> np.ndarray:
    """The photograph as RGB uint8 ``(600, 512, 3)`` (read-only; cached)."""
    from matplotlib import cbook

    sample = cbook.get_sample_data("grace_hopper.jpg")  # a file object (a path with asfileobj=False)
    with sample if hasattr(sample, "read") else open(sample, "rb") as fh:
        data = np.frombuffer(fh.read(), np.uint8)
    img = cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    img.setflags(write=False)
    return img


@dataclass(frozen=True)
class Motion:
    """How the photo moves over a video (all fractions are of the frame's height or width).

    The face's centre goes from ``x_path[0]`` to ``x_path[1]`` of the width (smooth, cosine eased)
    while bobbing ``y_swing`` of the height around the middle; its box height goes from
    ``face_height[0]`` to ``face_height[1]`` of the frame height. ``rotation`` is the in-plane angle
    (degrees, counter-clockwise on screen) at the start and the end, ``squeeze`` the photo's
    horizontal scale (0.6: a head turned away), ``exposure`` a gain on the whole frame (0.3: a dark
    capture, with its gamma).
    """

    width: int = 1280
    height: int = 720
    fps: float = 15.0
    seconds: float = 2.0
    face_height: tuple[float, float] = (0.30, 0.38)
    x_path: tuple[float, float] = (0.35, 0.65)
    y_swing: float = 0.06
    rotation: tuple[float, float] = (0.0, 0.0)
    squeeze: float = 1.0
    exposure: float = 1.0
    seed: int = 0

    @property
    def num_frames(self) -> int:
        return max(1, round(self.fps * self.seconds))


@dataclass
class RealFaceVideo:
    """A written video and its per-frame face boxes (frame pixels)."""

    path: Path
    boxes: list[Box]
    motion: Motion = field(default_factory=Motion)


def frame_affine(motion: Motion, k: int) -> np.ndarray:
    """The 2x3 map from photo pixels to frame pixels of frame ``k``."""
    n = motion.num_frames
    t = k / (n - 1) if n > 1 else 0.0
    ease = (1.0 - math.cos(math.pi * t)) / 2.0
    cx = motion.width * (motion.x_path[0] + (motion.x_path[1] - motion.x_path[0]) * ease)
    cy = motion.height * (0.5 + motion.y_swing * math.sin(2.0 * math.pi * t))
    fx0, fy0, fx1, fy1 = PHOTO_FACE_BOX
    scale = motion.height * (motion.face_height[0] + (motion.face_height[1] - motion.face_height[0]) * ease) / (fy1 - fy0)
    theta = math.radians(motion.rotation[0] + (motion.rotation[1] - motion.rotation[0]) * ease)
    rot = np.array([[math.cos(theta), math.sin(theta)], [-math.sin(theta), math.cos(theta)]])  # y points down
    lin = rot @ np.diag([scale * motion.squeeze, scale])
    centre = np.array([(fx0 + fx1) / 2.0, (fy0 + fy1) / 2.0])
    return np.hstack([lin, (np.array([cx, cy]) - lin @ centre)[:, None]])


def face_box(affine: np.ndarray) -> Box:
    """The upright face box after ``affine``: the bounds of the ellipse inscribed in
    :data:`PHOTO_FACE_BOX` once mapped (a face is an oval: when rotated, its upright box stays about
    the face's size, where the bounds of the rotated box's corners would be up to 1.4x wider).
    Without rotation it is exactly the mapped box."""
    x0, y0, x1, y1 = PHOTO_FACE_BOX
    a, b = (x1 - x0) / 2.0, (y1 - y0) / 2.0
    lin = affine[:, :2]
    cx, cy = lin @ np.array([(x0 + x1) / 2.0, (y0 + y1) / 2.0]) + affine[:, 2]
    hx = math.hypot(lin[0, 0] * a, lin[0, 1] * b)
    hy = math.hypot(lin[1, 0] * a, lin[1, 1] * b)
    return Box(float(cx - hx), float(cy - hy), float(cx + hx), float(cy + hy))


def background(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A textured RGB background: smooth colour blobs, random bars and fine grain (uint8)."""
    rng = np.random.default_rng(seed)
    low = rng.uniform(40, 215, size=(9, 16, 3)).astype(np.float32)
    img = cv2.resize(low, (width, height), interpolation=cv2.INTER_CUBIC)
    for _ in range(24):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        w, h = int(rng.integers(width // 40, width // 6)), int(rng.integers(height // 40, height // 5))
        cv2.rectangle(img, (x, y), (x + w, y + h), tuple(float(v) for v in rng.uniform(20, 235, 3)), -1)
    img = cv2.GaussianBlur(img, (0, 0), 1.5)
    img += rng.normal(0.0, 12.0, size=img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def render_frames(motion: Motion) -> Iterator[tuple[np.ndarray, Box]]:
    """Yield ``(frame RGB uint8, face box)`` for every frame of ``motion``."""
    bg = background(motion.width, motion.height, motion.seed)
    rng = np.random.default_rng(motion.seed + 1)
    grain = [rng.integers(-4, 5, size=bg.shape, dtype=np.int16) for _ in range(3)]  # temporal sensor noise
    lut = None
    if motion.exposure != 1.0:  # darker/brighter capture: a gain and a matching gamma
        levels = np.arange(256, dtype=np.float32) / 255.0
        lut = np.clip(255.0 * motion.exposure * levels ** (1.0 / max(motion.exposure, 0.1) ** 0.5), 0, 255).astype(np.uint8)
    src = photo()
    for k in range(motion.num_frames):
        affine = frame_affine(motion, k)
        frame = bg.copy()
        cv2.warpAffine(src, affine, (motion.width, motion.height), dst=frame, flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_TRANSPARENT)
        frame = np.clip(frame.astype(np.int16) + grain[k % len(grain)], 0, 255).astype(np.uint8)
        if lut is not None:
            frame = cv2.LUT(frame, lut)
        yield frame, face_box(affine)


def _tone(seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate), dtype=np.float32) / rate
    return (0.2 * np.sin(2 * np.pi * 220.0 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3.0 * t))).astype(np.float32)


def make_real_face_video(path: str | Path, motion: Motion = Motion(), audio: bool = False, crf: int = 23,
                         sample_rate: int = 16000) -> RealFaceVideo:
    """Render ``motion`` and stream it into an H.264 mp4 at ``path`` (a 220 Hz AAC tone with
    ``audio``); frames are encoded as they are rendered, so a 10 s 1080p video needs little memory.

    Returns the path and the face box of every frame.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    rate = Fraction(motion.fps).limit_denominator(1001)
    boxes: list[Box] = []
    with av.open(str(dest), mode="w", format="mp4") as container:
        video = container.add_stream("libx264", rate=rate)
        video.width, video.height, video.pix_fmt = motion.width, motion.height, "yuv420p"
        video.options = {"crf": str(crf), "preset": "veryfast"}
        sound = container.add_stream("aac", rate=sample_rate, layout="mono") if audio else None
        for k, (frame, box) in enumerate(render_frames(motion)):
            boxes.append(box)
            picture = av.VideoFrame.from_ndarray(frame, format="rgb24")
            picture.pts, picture.time_base = k, 1 / rate
            container.mux(video.encode(picture))
        container.mux(video.encode(None))
        if sound is not None:
            samples = _tone(motion.num_frames / motion.fps, sample_rate)
            for s0 in range(0, len(samples), 1024):
                chunk = av.AudioFrame.from_ndarray(samples[None, s0 : s0 + 1024].copy(), format="fltp", layout="mono")
                chunk.sample_rate, chunk.pts = sample_rate, s0
                container.mux(sound.encode(chunk))
            container.mux(sound.encode(None))
    return RealFaceVideo(dest, boxes, motion)
