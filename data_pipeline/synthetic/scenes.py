"""Who is filmed and where: random identities (appearance, voice) and scenes (background, light,
head motion, speech), and the static background render of a scene."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from .config import SynthConfig, _stable

# =============================================================================== identities


@dataclass(frozen=True)
class Identity:
    """Appearance and voice of one synthetic person (all lengths relative to the face)."""

    skin: tuple[float, float, float]
    """Skin RGB in [0, 1]."""
    face_b: float
    """Face half-height (forehead to chin) as a fraction of the frame height."""
    aspect: float
    """Face half-height / half-width."""
    jaw: float
    """Narrowing of the lower face (0 = ellipse)."""
    eye_dx: float
    """Eye centre distance from the midline, in face half-widths."""
    eye_y: float
    """Eye height, in face half-heights (negative = above the centre)."""
    eye_w: float
    """Eye half-width, in face half-widths."""
    eye_h: float
    """Eye half-height, in face half-widths."""
    iris: tuple[float, float, float]
    """Iris RGB."""
    brow_thick: float
    """Eyebrow thickness, in face half-widths."""
    brow_gap: float
    """Eyebrow height above the eye, in face half-widths."""
    brow_tilt: float
    """Eyebrow tilt in degrees (positive = outer end lower)."""
    nose_len: float
    """Nose tip height, in face half-heights below the centre."""
    nose_w: float
    """Nose half-width, in face half-widths."""
    mouth_y: float
    """Mouth height, in face half-heights below the centre."""
    mouth_w: float
    """Mouth half-width, in face half-widths."""
    lip: tuple[float, float, float]
    """Lip RGB."""
    hair: tuple[float, float, float]
    """Hair RGB."""
    hair_style: int
    """0 short, 1 long, 2 fringe, 3 receding/bald top."""
    hairline: float
    """Hairline height, in face half-heights (negative)."""
    clothes: tuple[float, float, float]
    """Clothing RGB."""
    f0: float
    """Voice fundamental frequency (Hz)."""


_SKIN_TONES = np.array(
    [
        (0.96, 0.80, 0.69),
        (0.92, 0.74, 0.60),
        (0.87, 0.67, 0.52),
        (0.78, 0.57, 0.42),
        (0.66, 0.46, 0.33),
        (0.55, 0.37, 0.26),
        (0.44, 0.29, 0.20),
        (0.36, 0.23, 0.16),
    ]
)
_HAIR = np.array(
    [(0.08, 0.06, 0.05), (0.20, 0.13, 0.08), (0.35, 0.22, 0.12), (0.55, 0.40, 0.22),
     (0.75, 0.62, 0.38), (0.45, 0.15, 0.08), (0.55, 0.55, 0.55), (0.12, 0.10, 0.10)]
)


def make_identity(rng: np.random.Generator) -> Identity:
    """Draw a random identity."""
    tone = _SKIN_TONES[rng.integers(len(_SKIN_TONES))] * rng.uniform(0.95, 1.05, 3)
    u = rng.uniform

    def col(base: Sequence[float], jitter: float) -> tuple[float, float, float]:
        return tuple(float(np.clip(c + rng.normal(0, jitter), 0, 1)) for c in base)  # type: ignore[return-value]

    hair = _HAIR[rng.integers(len(_HAIR))] * rng.uniform(0.9, 1.1, 3)
    lum = np.array([0.3, 0.59, 0.11])
    if hair @ lum > 0.85 * (tone @ lum):  # hair lighter than the skin confuses face detectors
        hair = hair * (0.85 * (tone @ lum) / (hair @ lum))
    lip_base = np.clip(tone * np.array([0.85, 0.55, 0.55]) + np.array([0.05, 0.0, 0.0]), 0, 1)
    return Identity(
        skin=col(tone, 0.01),
        face_b=u(0.23, 0.29),
        aspect=u(1.22, 1.42),
        jaw=u(0.0, 0.3),
        eye_dx=u(0.36, 0.44),
        eye_y=u(-0.2, -0.1),
        eye_w=u(0.17, 0.22),
        eye_h=u(0.075, 0.10),
        iris=col(_HAIR[rng.integers(len(_HAIR))] * 0.8 + 0.05, 0.03),
        brow_thick=u(0.06, 0.1),
        brow_gap=u(0.17, 0.24),
        brow_tilt=u(-8.0, 12.0),
        nose_len=u(0.22, 0.34),
        nose_w=u(0.14, 0.2),
        mouth_y=u(0.5, 0.6),
        mouth_w=u(0.28, 0.4),
        lip=col(lip_base, 0.03),
        hair=col(hair, 0.0),
        hair_style=int(rng.integers(4)),
        hairline=u(-0.72, -0.55),
        clothes=col(rng.uniform(0.05, 0.9, 3), 0.0),
        f0=u(95.0, 230.0),
    )


# =============================================================================== scenes


@dataclass(frozen=True)
class Scene:
    """Everything about a video except who is in it: camera, background, light, motion, speech."""

    height: int
    width: int
    fps: float
    num_frames: int
    sample_rate: int
    bg_kind: int
    bg_colors: tuple[tuple[float, float, float], ...]
    bg_param: float
    light_dir: tuple[float, float, float]
    light_gain: float
    light_tint: tuple[float, float, float]
    ambient: float
    cx: float
    cy: float
    motion: tuple[tuple[float, float, float], ...]
    """Per motion channel (dx, dy, angle, scale): amplitude, frequency (Hz), phase."""
    mouth: tuple[float, ...]
    """Mouth opening in [0, 1] per frame."""
    noise_sigma: float
    seed: int
    person_width: int = 0
    """Width of the part of the frame one person occupies, in pixels (0: the whole ``width``).
    It sizes the face canvas and the sideways head motion; a two-person frame is two persons
    wide (see :mod:`.pairs`)."""


#: the :class:`Scene` fields that are the benchmark's video format, copied from :class:`SynthConfig`
_VIDEO_FORMAT = ("height", "width", "fps", "num_frames", "sample_rate")


def _speech_envelope(rng: np.random.Generator, n: int, fps: float) -> np.ndarray:
    """Mouth opening per frame: short bursts of 1-3 syllables (3-5 Hz) separated by
    closed-mouth pauses of similar length, so that a 0.3-0.5 s audio shift is clearly visible."""
    t = np.arange(n) / fps
    out = np.zeros(n)
    pos = rng.uniform(-0.3, 0.3)
    while pos < t[-1] + 0.5:
        burst = rng.uniform(0.3, 0.65)
        rate = rng.uniform(3.0, 5.0)
        inside = (t >= pos) & (t < pos + burst)
        phase = (t[inside] - pos) * rate
        amp = rng.uniform(0.55, 1.0, int(math.ceil(burst * rate)) + 1)[phase.astype(int)]
        out[inside] = amp * np.sin(np.pi * (phase % 1.0)) ** 0.7
        pos += burst + rng.uniform(0.3, 0.5)
    return np.clip(out, 0.0, 1.0)


def make_scene(rng: np.random.Generator, cfg: SynthConfig) -> Scene:
    """Draw a random scene (background, light, head motion and speech) for ``cfg``'s frame size."""
    u = rng.uniform
    ang = u(0, 2 * math.pi)
    lx, ly = math.cos(ang), math.sin(ang) * 0.6 - 0.3
    lz = u(0.6, 1.0)
    norm = math.sqrt(lx * lx + ly * ly + lz * lz)
    warm = u(-1, 1)
    tint = (1.0 + 0.06 * warm, 1.0, 1.0 - 0.08 * warm)
    n_colors = 3
    colors = tuple(tuple(float(c) for c in rng.uniform(0.1, 0.95, 3)) for _ in range(n_colors))
    motion = (
        (u(0.01, 0.035), u(0.15, 0.6), u(0, 6.3)),  # dx (frame widths)
        (u(0.005, 0.02), u(0.2, 0.7), u(0, 6.3)),  # dy (frame heights)
        (u(1.5, 6.0), u(0.15, 0.5), u(0, 6.3)),  # angle (degrees)
        (u(0.01, 0.035), u(0.1, 0.4), u(0, 6.3)),  # scale
    )
    return Scene(
        **{name: getattr(cfg, name) for name in _VIDEO_FORMAT},
        bg_kind=int(rng.integers(6)),
        bg_colors=colors,  # type: ignore[arg-type]
        bg_param=u(0, 1),
        light_dir=(lx / norm, ly / norm, lz / norm),
        light_gain=u(0.85, 1.15),
        light_tint=tint,
        ambient=u(0.35, 0.5),
        cx=u(0.42, 0.58),
        cy=u(0.44, 0.52),
        motion=motion,
        mouth=tuple(float(x) for x in _speech_envelope(rng, cfg.num_frames, cfg.fps)),
        noise_sigma=u(1.0, 2.5),
        seed=int(rng.integers(2**31)),
    )


def _smooth_noise(rng: np.random.Generator, h: int, w: int, sigma: float) -> np.ndarray:
    n = rng.standard_normal((h, w)).astype(np.float32)
    n = cv2.GaussianBlur(n, (0, 0), sigma) if sigma > 0 else n
    return n / (_stable(n.std(dtype=np.float64)) + 1e-6)


def render_background(scene: Scene) -> np.ndarray:
    """The static background of a scene, float32 RGB in [0, 1] of shape (H, W, 3)."""
    h, w = scene.height, scene.width
    rng = np.random.default_rng(scene.seed)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    xn, yn = xs / w, ys / h
    c = [np.array(col, np.float32) for col in scene.bg_colors]
    kind, p = scene.bg_kind, scene.bg_param
    if kind == 0:  # linear gradient
        a = p * 2 * math.pi
        g = (math.cos(a) * (xn - 0.5) + math.sin(a) * (yn - 0.5)) + 0.5
        img = c[0] + np.clip(g, 0, 1)[..., None] * (c[1] - c[0])
    elif kind == 1:  # radial gradient
        r = np.sqrt((xn - p) ** 2 + (yn - 0.3) ** 2)
        img = c[0] + np.clip(r * 1.4, 0, 1)[..., None] * (c[1] - c[0])
    elif kind == 2:  # stripes
        period = 8 + 16 * p
        s = (np.sin(2 * math.pi * (xs + 0.3 * ys) / period) > 0).astype(np.float32)
        img = c[0] + s[..., None] * (c[1] - c[0]) * 0.6
    elif kind == 3:  # blocks (shelves, tiles)
        cell = int(10 + 20 * p)
        cells = rng.uniform(0, 1, (h // cell + 2, w // cell + 2)).astype(np.float32)
        s = cells[(ys // cell).astype(int), (xs // cell).astype(int)]
        img = c[0] + s[..., None] * (c[1] - c[0])
    elif kind == 4:  # smooth texture
        t = _smooth_noise(rng, h, w, 3 + 6 * p)
        img = c[0] + np.clip(0.5 + 0.3 * t, 0, 1)[..., None] * (c[1] - c[0])
    else:  # wall with a window/door rectangle
        img = np.broadcast_to(c[0], (h, w, 3)).copy()
        x0, y0 = int(w * (0.05 + 0.6 * p)), int(h * 0.08)
        img[y0 : y0 + h // 3, x0 : x0 + w // 4] = c[1]
        img[int(h * 0.75) :, :] = c[2] * 0.8
    fine = _smooth_noise(rng, h, w, 0.6)
    img = img * (1.0 + 0.04 * fine[..., None])
    # the scene light also shades the background: brighter on the light's side
    lx, ly, _ = scene.light_dir
    ramp = 1.0 + 0.35 * (lx * (xn - 0.5) + ly * (yn - 0.5)) * 2
    img = img * ramp[..., None] * np.array(scene.light_tint, np.float32) * scene.light_gain
    return np.clip(img, 0, 1).astype(np.float32)
