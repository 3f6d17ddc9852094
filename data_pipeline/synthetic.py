"""Synthetic deepfake benchmark: procedurally rendered talking faces in the three real layouts.

The generator renders *real* videos of shaded, talking faces (identity, pose, background and
lighting vary per video; the audio track's loudness follows the mouth opening), and derives
*fakes* from them, one manipulation family per fake:

=========================  ====================================================  ==========
family                     what is done to the real video                        specialist
=========================  ====================================================  ==========
``face_swap``              inner face of another identity (same pose and mouth)  bg
                           pasted with a hard seam and a dark/bright halo, a
                           colour cast, smoothed and noise-free
``double_compression``     face area JPEG-compressed at quality ~10 (8x8         cm
                           blocks) before the final H.264
``resolution_mismatch``    face downscaled x3-4 and upscaled back (blurry face   rr
                           on a sharp, noisy frame)
``temporal_flicker``       per-frame jitter of the face's position, gain and     tm
                           colour
``lighting_inconsistency`` face re-rendered lit from the opposite side in the     bg
                           opposite colour temperature (hair, neck and
                           background keep the scene's light)
``lip_sync_shift``         audio shifted by 0.3-0.5 s against the mouth (the     av
                           shift that decorrelates loudness and mouth most)
``low_light``              a face swap on a low-light (dark, noisy) capture;     ll
                           the pasted face is smooth and noise-free. Low-light
                           *reals* exist too: darkness is not the fake signal
=========================  ====================================================  ==========

Reals are captured in normal light or in low light (``SynthConfig.low_light_fraction``).
Normal-light reals get the six other families (all of them, or ``fakes_per_real`` in rotation);
low-light reals get one ``low_light`` fake. A fake keeps the identity group of its target real.
``FAMILY_SPECIALIST`` maps each family to the specialist whose artefact it carries; the truth
file's ``light`` field lets a low-light specialist train on low-light reals vs its fakes.

Faces are shaded like real ones (Lambertian head, dark eye band and brows, bright nose bridge
and cheeks, dark mouth interior) so that OpenCV's frontal-face Haar cascade finds them; the
truth boxes are calibrated to the cascade's boxes.

Layouts written under ``root`` (see ``data/README.md`` for the real metadata formats):

* ``ffpp/original_sequences/youtube/c23/videos/000.mp4``,
  ``ffpp/manipulated_sequences/<Folder>/c23/videos/<target>_<source>.mp4`` and
  ``ffpp/splits/{train,val,test}.json`` (official pair lists);
* ``celebdf/{Celeb-real,YouTube-real,Celeb-synthesis}/...`` and
  ``celebdf/List_of_testing_videos.txt`` (1 = REAL, 0 = FAKE, no trailing newline);
* ``dfdc/dfdc_train_part_<k>/<10 letters>.mp4`` + ``metadata.json`` per part;
* ``<dataset>/synthetic_truth.json``: ``{video_id: {"label", "family", "boxes", "group",
  "light"}}`` where ``video_id`` is the path relative to the dataset root and ``boxes`` holds
  one ``[x0, y0, x1, y1]`` face box per frame (frame pixels).

Everything is deterministic given ``SynthConfig.seed``: each video draws from its own
``numpy`` generator seeded by (seed, dataset, video), so worker scheduling does not matter, and
videos are encoded single-threaded, so the files are byte-identical from run to run.

CLI: ``python -m data_pipeline.synthetic --out DIR [--seed N] [--scale tiny|small|default]``
(also ``interceptor synth``).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import string
import sys
import time
import zlib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np

from data_pipeline.video import write_video

__all__ = [
    "DATASETS",
    "FAMILIES",
    "FAMILY_FOLDERS",
    "FAMILY_SPECIALIST",
    "SCALES",
    "Identity",
    "LowLight",
    "Rendered",
    "Scene",
    "SynthConfig",
    "apply_family",
    "capture",
    "config_for_scale",
    "generate",
    "main",
    "make_identity",
    "make_low_light",
    "make_scene",
    "render",
    "render_background",
    "render_real",
    "write_sample",
]

#: Manipulation families, in the order they are assigned to reals.
FAMILIES: tuple[str, ...] = (
    "face_swap",
    "double_compression",
    "resolution_mismatch",
    "temporal_flicker",
    "lighting_inconsistency",
    "lip_sync_shift",
    "low_light",
)

#: FF++ ``manipulated_sequences/<folder>`` name of each family.
FAMILY_FOLDERS: dict[str, str] = {
    "face_swap": "FaceSwapBlend",
    "double_compression": "DoubleCompression",
    "resolution_mismatch": "ResolutionMismatch",
    "temporal_flicker": "TemporalFlicker",
    "lighting_inconsistency": "LightingInconsistency",
    "lip_sync_shift": "LipSyncShift",
    "low_light": "LowLightSwap",
}

#: The specialist (``specialists`` registry key) whose artefact each family carries.
FAMILY_SPECIALIST: dict[str, str] = {
    "face_swap": "bg",
    "double_compression": "cm",
    "resolution_mismatch": "rr",
    "temporal_flicker": "tm",
    "lighting_inconsistency": "bg",
    "lip_sync_shift": "av",
    "low_light": "ll",
}

DATASETS: tuple[str, ...] = ("ffpp", "celebdf", "dfdc")

_NORMAL_FAMILIES = tuple(f for f in FAMILIES if f != "low_light")


# =============================================================================== configuration


@dataclass
class SynthConfig:
    """Settings of a synthetic benchmark. Every size is per dataset layout."""

    seed: int = 0
    """Master seed: the same seed gives the same files (decoded content) and metadata."""
    height: int = 144
    """Frame height in pixels (even)."""
    width: int = 144
    """Frame width in pixels (even)."""
    fps: float = 15.0
    """Frame rate of every video."""
    num_frames: int = 36
    """Frames per video (36 at 15 fps = 2.4 s)."""
    sample_rate: int = 16000
    """Audio sample rate (mono AAC)."""
    crf: int = 23
    """x264 quality of the final encode (FF++ "c23" is crf 23)."""
    datasets: tuple[str, ...] = DATASETS
    """Which layouts to write (``ffpp``, ``celebdf``, ``dfdc``)."""
    families: tuple[str, ...] = FAMILIES
    """Manipulation families to generate (``low_light`` needs ``low_light_fraction > 0``)."""
    fakes_per_real: int | None = None
    """Families applied to each normal-light real (``None``: all of them). Families rotate
    over the reals so that every family is present."""
    low_light_fraction: float = 0.4
    """Fraction of reals captured in low light (they get ``low_light`` fakes)."""
    ffpp_pairs: int = 20
    """FF++: number of ``[target, source]`` pairs (2 reals each)."""
    celebdf_identities: int = 20
    """Celeb-DF: identities in ``Celeb-real`` (must exceed the families per real)."""
    celebdf_videos_per_identity: int = 2
    """Celeb-DF: ``Celeb-real`` videos per identity."""
    celebdf_youtube: int = 8
    """Celeb-DF: ``YouTube-real`` videos (reals without fakes)."""
    dfdc_parts: int = 4
    """DFDC: number of ``dfdc_train_part_<k>`` folders."""
    dfdc_reals_per_part: int = 10
    """DFDC: real videos per part (their fakes live in the same part)."""
    val_fraction: float = 0.15
    """Share of FF++ pairs in ``val.json``."""
    test_fraction: float = 0.2
    """Share of FF++ pairs in ``test.json`` and of Celeb-DF identities in the test list."""
    workers: int = 2
    """Processes rendering and encoding in parallel (1 = in-process)."""


#: Named presets. ``tiny`` is for tests (a handful of videos per layout, seconds to generate).
SCALES: dict[str, dict[str, Any]] = {
    "tiny": dict(
        height=112,
        width=112,
        fps=12.0,
        num_frames=24,
        fakes_per_real=3,
        low_light_fraction=0.34,
        ffpp_pairs=3,
        celebdf_identities=4,
        celebdf_videos_per_identity=1,
        celebdf_youtube=2,
        dfdc_parts=2,
        dfdc_reals_per_part=2,
        test_fraction=0.34,
        val_fraction=0.34,
    ),
    "small": dict(
        ffpp_pairs=10,
        celebdf_identities=10,
        celebdf_youtube=4,
        dfdc_parts=4,
        dfdc_reals_per_part=5,
        test_fraction=0.25,
    ),
    # ``make demo``: short videos, two fakes per real (a real/fake mix a from-scratch CPU model can
    # learn in minutes), DFDC the largest layout as in reality.
    "demo": dict(
        num_frames=24,
        fakes_per_real=2,
        ffpp_pairs=40,
        celebdf_identities=40,
        celebdf_videos_per_identity=1,
        celebdf_youtube=12,
        dfdc_parts=6,
        dfdc_reals_per_part=30,
        test_fraction=0.25,
    ),
    "default": {},
}


def config_for_scale(scale: str, **overrides: Any) -> SynthConfig:
    """A :class:`SynthConfig` for a named scale (``tiny``, ``small``, ``default``) with overrides."""
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of {sorted(SCALES)}")
    return replace(SynthConfig(**SCALES[scale]), **overrides)


def _stable(x: float, digits: int = 4) -> float:
    """Round a scalar derived from an array reduction. NumPy's SIMD reductions may differ in the
    last bits with the arrays' memory alignment; rounding keeps the output bit-for-bit
    deterministic across runs and processes."""
    return round(float(x), digits)


def _rng(*key: int | str) -> np.random.Generator:
    """A generator seeded by a tuple of ints/strings (strings hashed with crc32: stable)."""
    words = [zlib.crc32(k.encode()) if isinstance(k, str) else int(k) & 0xFFFFFFFF for k in key]
    return np.random.default_rng(words)


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
        height=cfg.height,
        width=cfg.width,
        fps=cfg.fps,
        num_frames=cfg.num_frames,
        sample_rate=cfg.sample_rate,
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


# =============================================================================== face rendering


@dataclass
class _Canvas:
    """A face rendered once per video in canonical pose on an oversized canvas."""

    rgb: np.ndarray  # (Hc, Wc, 3) uint8, no mouth
    alpha: np.ndarray  # (Hc, Wc) uint8: person (face, hair, neck, clothes)
    face: np.ndarray  # (Hc, Wc) uint8: face skin region (for manipulations)
    cx: float
    cy: float
    a: float  # face half-width (px)
    b: float  # face half-height (px)
    shade_mouth: float  # light level at the mouth (for drawing lips)


def _gauss(x: np.ndarray, y: np.ndarray, cx: float, cy: float, sx: float, sy: float) -> np.ndarray:
    return np.exp(-(((x - cx) / sx) ** 2 + ((y - cy) / sy) ** 2))


def _smoothstep(d: np.ndarray, width: float) -> np.ndarray:
    """0 outside (d < 0) to 1 inside (d > width), smooth in between."""
    t = np.clip(d / max(width, 1e-6), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _render_canvas(ident: Identity, scene: Scene, light: tuple[float, float, float] | None = None,
                   tint: tuple[float, float, float] | None = None) -> _Canvas:
    """Render ``ident`` under ``scene``'s light (or ``light``/``tint`` overrides) in canonical pose."""
    H, W = scene.height, scene.width
    hc, wc = int(H * 1.3) // 2 * 2, int(W * 1.3) // 2 * 2
    b = ident.face_b * H
    a = b / ident.aspect
    cx, cy = wc / 2.0, hc * 0.45
    ys, xs = np.mgrid[0:hc, 0:wc].astype(np.float32)
    X = (xs - cx) / a
    Y = (ys - cy) / b
    px = 1.0 / a  # one pixel in face units (x)

    # face shape: an ellipse narrowed towards the chin
    narrow = 1.0 - ident.jaw * np.clip(Y, 0, 1) ** 2
    Xw = X / narrow
    r2 = Xw**2 + Y**2
    face_in = _smoothstep(1.0 - np.sqrt(r2), 1.5 * px)

    L = np.array(light if light is not None else scene.light_dir, np.float32)
    L = L / np.linalg.norm(L)
    tint_arr = np.array(tint if tint is not None else scene.light_tint, np.float32)
    amb = scene.ambient
    nz = np.sqrt(np.clip(1.0 - r2, 0.0, 1.0))
    nx, ny = Xw * 0.9, Y * 0.9
    nn = np.sqrt(nx**2 + ny**2 + nz**2) + 1e-6
    lambert = np.clip((nx * L[0] + ny * L[1] + nz * L[2]) / nn, 0, 1)
    shade = amb + (1 - amb) * 1.25 * lambert

    # relief: eye sockets and brow band darker; nose bridge, cheeks, forehead brighter
    ex, ey = ident.eye_dx, ident.eye_y * ident.aspect  # eye centre in face-x units
    Ya = Y * ident.aspect  # y in face-x units (isotropic)
    relief = np.ones_like(X)
    for s in (-1.0, 1.0):
        relief -= 0.5 * _gauss(X, Ya, s * ex, ey - 0.03, ident.eye_w * 1.7, ident.eye_h * 3.0)
        relief += 0.14 * _gauss(X, Ya, s * 0.45, ey + 0.45, 0.22, 0.18)  # cheek
    nose_top, nose_tip = ey, ident.nose_len * ident.aspect
    along = np.clip((Ya - nose_top) / max(nose_tip - nose_top, 1e-3), 0, 1)
    bridge = np.exp(-((X - 0.0) / 0.07) ** 2) * (Ya > nose_top - 0.1) * (Ya < nose_tip + 0.05)
    relief += 0.22 * bridge * (0.6 + 0.4 * along)
    side = -1.0 if L[0] > 0 else 1.0  # nose casts its shadow away from the light
    relief -= 0.18 * np.exp(-((X - side * ident.nose_w * 0.9) / 0.06) ** 2) * (Ya > nose_top + 0.1) * (Ya < nose_tip)
    relief -= 0.25 * _gauss(X, Ya, 0.0, nose_tip + 0.07, ident.nose_w, 0.05)  # under the nose
    relief += 0.10 * _gauss(X, Ya, 0.0, -0.85 * ident.aspect, 0.5, 0.25)  # forehead
    relief -= 0.10 * _gauss(X, Ya, 0.0, ident.mouth_y * ident.aspect + 0.25, 0.3, 0.08)  # chin crease
    rng = np.random.default_rng(scene.seed + 7)
    pores = cv2.resize(rng.standard_normal((hc // 2, wc // 2)).astype(np.float32), (wc, hc))
    skin_tex = 1.0 + 0.045 * pores + 0.03 * _smooth_noise(rng, hc, wc, 0.7)
    skin = np.array(ident.skin, np.float32) * tint_arr
    face_rgb = (skin[None, None, :] * (shade * relief * skin_tex)[..., None]) * scene.light_gain

    # neck and clothes (behind the face)
    neck_in = _smoothstep(0.62 - np.abs(X), 2 * px) * (Y > 0.4)
    neck_shade = np.clip(0.55 + 0.25 * np.clip(Y - 0.9, 0, 1), 0, 1) * (amb + (1 - amb) * L[2])
    clothes_r = ((X / 2.6) ** 2 + ((Y - 1.95) / 0.8) ** 2)
    clothes_in = _smoothstep(1 - np.sqrt(clothes_r), 0.02)
    clothes_rgb = np.array(ident.clothes, np.float32) * tint_arr * (0.6 + 0.4 * np.clip(1 - np.abs(X) / 3, 0, 1))[..., None]

    # ears
    ear_in = np.zeros_like(X)
    for s in (-1.0, 1.0):
        ear_in = np.maximum(ear_in, _smoothstep(1 - np.sqrt(((X - s * 0.98) / 0.14) ** 2 + ((Y + 0.05) / 0.2) ** 2), 0.1))

    # hair: a cap above the hairline and, by style, at the sides
    head_r = np.sqrt((X / 1.13) ** 2 + ((Y + 0.12) / 1.08) ** 2)
    head_in = _smoothstep(1 - head_r, 1.5 * px)
    hairline = ident.hairline + 0.22 * X**2
    if ident.hair_style == 2:  # fringe: lower hairline
        hairline = hairline + 0.1
    if ident.hair_style == 3:  # receding: high hairline
        hairline = hairline - 0.15
    top = _smoothstep(hairline - Y, 0.04)
    sides = _smoothstep(np.abs(X) - 0.93, 0.04) * (Y < 0.05)
    hair_mask = head_in * np.maximum(top, sides)
    if ident.hair_style == 1:  # long hair falls behind the shoulders
        long_in = _smoothstep(1 - np.sqrt((X / 1.35) ** 2 + ((Y - 0.4) / 1.5) ** 2), 0.03) * (Y > -0.2)
        long_in = long_in * _smoothstep(np.abs(X) - 0.75, 0.05)
        hair_mask = np.maximum(hair_mask, long_in)
    hair_tex = 1.0 + 0.12 * _smooth_noise(rng, hc, wc, 0.8) * (np.sin(xs * 1.7 + ys * 0.3) * 0.5 + 0.5)
    hair_shade = amb + (1 - amb) * np.clip((X * 0.5 * L[0] + (Y + 0.5) * 0.5 * L[1] + 0.8 * L[2]), 0, 1)
    hair_rgb = np.array(ident.hair, np.float32) * tint_arr * (hair_shade * hair_tex)[..., None] * scene.light_gain

    # composite back to front
    rgb = clothes_rgb * clothes_in[..., None]
    alpha = clothes_in.copy()
    skin_plain = skin[None, None, :] * scene.light_gain
    for m, col in ((neck_in, skin_plain * neck_shade[..., None]), (ear_in, face_rgb * 0.85)):
        rgb = rgb * (1 - m[..., None]) + col * m[..., None]
        alpha = np.maximum(alpha, m)
    rgb = rgb * (1 - face_in[..., None]) + face_rgb * face_in[..., None]
    alpha = np.maximum(alpha, face_in)
    rgb = rgb * (1 - hair_mask[..., None]) + hair_rgb * hair_mask[..., None]
    alpha = np.maximum(alpha, hair_mask)
    face_region = face_in * (1 - hair_mask)

    img = np.clip(rgb * 255.0, 0, 255).astype(np.uint8)

    # crisp features drawn in pixels
    def P(fx: float, fy: float) -> tuple[int, int]:
        return int(round((cx + fx * a) * 16)), int(round((cy + fy * b) * 16))

    def S(rx: float, ry: float) -> tuple[int, int]:
        return max(1, int(round(rx * a * 16))), max(1, int(round(ry * a * 16)))

    eye_shade = float(np.clip(amb + (1 - amb) * L[2], 0, 1)) * scene.light_gain
    # sclera in the eye's shadow: never much brighter than the skin (at low resolution real eyes
    # read as dark blobs, which is what face detectors key on)
    sclera = np.minimum(np.array([0.80, 0.77, 0.74]), np.array(ident.skin) * 1.15 + 0.08)
    white = tuple(int(v) for v in np.clip(sclera * 255 * tint_arr * eye_shade * 0.85, 0, 255))
    iris = tuple(int(v) for v in np.clip(np.array(ident.iris) * 255 * eye_shade, 0, 255))
    brow_base = np.minimum(np.array(ident.hair), np.array(ident.skin) * 0.45)
    brow_col = tuple(int(v) for v in np.clip(brow_base * 255 * eye_shade, 0, 255))
    lash = (25, 18, 15)
    for s in (-1.0, 1.0):
        ecx, ecy = P(s * ex, ident.eye_y)
        cv2.ellipse(img, (ecx, ecy), S(ident.eye_w, ident.eye_h), 0, 0, 360, white, -1, cv2.LINE_AA, 4)
        cv2.ellipse(img, (ecx, ecy), S(ident.eye_h * 1.5, ident.eye_h), 0, 0, 360, iris, -1, cv2.LINE_AA, 4)
        cv2.circle(img, (ecx, ecy), S(ident.eye_h * 0.45, 0)[0], (10, 8, 8), -1, cv2.LINE_AA, 4)
        cv2.ellipse(img, (ecx, ecy), S(ident.eye_w, ident.eye_h * 1.05), 0, 180, 360, lash, max(1, int(round(a * 0.07))), cv2.LINE_AA, 4)
        bcx, bcy = P(s * (ex + 0.02), ident.eye_y - ident.brow_gap / ident.aspect)
        cv2.ellipse(img, (bcx, bcy), S(ident.eye_w * 1.35, ident.brow_thick * 2.2), s * ident.brow_tilt, 200, 340,
                    brow_col, max(1, int(round(ident.brow_thick * a))), cv2.LINE_AA, 4)
    # nostrils
    for s in (-1.0, 1.0):
        ncx, ncy = P(s * ident.nose_w * 0.55, ident.nose_len)
        cv2.ellipse(img, (ncx, ncy), S(ident.nose_w * 0.35, ident.nose_w * 0.18), 0, 0, 360,
                    tuple(int(v) for v in np.array(ident.skin) * 255 * 0.35 * eye_shade), -1, cv2.LINE_AA, 4)

    mouth_shade = float(shade[int(cy + ident.mouth_y * b), int(cx)])
    return _Canvas(
        rgb=img,
        alpha=np.clip(alpha * 255, 0, 255).astype(np.uint8),
        face=np.clip(face_region * 255, 0, 255).astype(np.uint8),
        cx=cx,
        cy=cy,
        a=a,
        b=b,
        shade_mouth=mouth_shade * scene.light_gain,
    )


def _draw_mouth(img: np.ndarray, ident: Identity, cv: _Canvas, opening: float, tint: np.ndarray) -> None:
    """Draw lips and the (dark) mouth interior, ``opening`` in [0, 1], onto a canvas copy."""
    a, b = cv.a, cv.b
    mx, my = cv.cx, cv.cy + ident.mouth_y * b
    shade = cv.shade_mouth
    lip = tuple(int(v) for v in np.clip(np.array(ident.lip) * 255 * tint * shade, 0, 255))
    dark = tuple(int(v) for v in np.clip(np.array([0.18, 0.05, 0.05]) * 255 * shade, 0, 255))
    teeth = tuple(int(v) for v in np.clip(np.array([0.85, 0.82, 0.75]) * 255 * tint * shade, 0, 255))
    mw = ident.mouth_w * a
    open_h = 0.02 * a + 0.24 * a * opening
    c = (int(round(mx * 16)), int(round(my * 16)))
    cv2.ellipse(img, c, (int(mw * 16), int((open_h + 0.09 * a) * 16)), 0, 0, 360, lip, -1, cv2.LINE_AA, 4)
    cv2.ellipse(img, c, (int(mw * 0.82 * 16), max(8, int(open_h * 16))), 0, 0, 360, dark, -1, cv2.LINE_AA, 4)
    if opening > 0.3:
        cv2.ellipse(img, (c[0], c[1] - int(open_h * 0.55 * 16)), (int(mw * 0.6 * 16), int(open_h * 0.35 * 16)),
                    0, 0, 360, teeth, -1, cv2.LINE_AA, 4)


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
    dx, dy, ang, sc = ch[0] * scene.width, ch[1] * scene.height, ch[2], 1.0 + ch[3]
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
        if exposure is None:
            lum = cv.rgb[cv.face > 128].astype(np.float32) @ np.array([0.3, 0.59, 0.11], np.float32)
            exposure = _stable(np.clip(0.45 * 255.0 / max(float(lum.mean(dtype=np.float64)), 1.0), 1.0, 1.8))
        tint_arr = np.array(tint if tint is not None else scene.light_tint, np.float32)
        stack = np.dstack([cv.rgb, cv.alpha, cv.face])
        for i, M in enumerate(_affines(scene, cv)):
            layer = stack.copy()
            rgb = np.ascontiguousarray(layer[..., :3])
            _draw_mouth(rgb, ident, cv, float(mouth[i]), tint_arr)
            layer[..., :3] = rgb
            warped = cv2.warpAffine(layer, M, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
            al = warped[..., 3:4].astype(np.float32) / 255.0
            clean[i] = np.minimum((bg * (1 - al) + warped[..., :3].astype(np.float32) / 255.0 * al) * exposure, 1.0)
            masks[i] = warped[..., 4]
            boxes[i] = _face_box(M, cv)
    else:
        clean[:] = np.minimum(bg * (exposure or 1.0), 1.0)
    noise = rng.standard_normal((n, H, W, 3)).astype(np.float32) * (scene.noise_sigma / 255.0)
    frames = np.clip((clean + noise) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    audio = _voice(ident, scene, mouth if with_face else np.zeros_like(mouth), rng)
    return Rendered(frames=frames, audio=audio, boxes=boxes, face_masks=masks, clean=clean, mouth=mouth,
                    exposure=exposure or 1.0)


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


def apply_family(family: str, real: Rendered, ident: Identity, scene: Scene, rng: np.random.Generator,
                 source: Identity | None = None, low_light: LowLight | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Derive a fake ``(frames uint8, audio)`` of ``family`` from a rendered real.

    ``source`` is the other identity for swap-based families; ``low_light`` is the capture of a
    low-light real (its frames already carry it; the ``low_light`` family needs it).
    """
    n, H, W = real.frames.shape[:3]
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
        out = frames.copy()
        quality = int(rng.integers(7, 12))
        for i in range(n):
            ys, xs = _box_slices(real.boxes[i], 1.25, H, W)
            crop = cv2.cvtColor(real.frames[i, ys, xs], cv2.COLOR_RGB2BGR)
            ok, buf = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, quality])
            assert ok
            dec = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            out[i, ys, xs] = dec.astype(np.float32) / 255.0
    elif family == "resolution_mismatch":
        factor = float(rng.uniform(3.0, 4.0))
        m = _feather(real.face_masks, erode_px=0, blur_px=1.0)
        low = np.empty_like(frames)
        for i in range(n):
            small = cv2.resize(frames[i], (max(4, int(W / factor)), max(4, int(H / factor))), interpolation=cv2.INTER_AREA)
            low[i] = cv2.resize(small, (W, H), interpolation=cv2.INTER_LINEAR)
        out = frames * (1 - m) + low * m
    elif family == "temporal_flicker":
        m = _feather(real.face_masks, erode_px=0, blur_px=1.0)
        out = np.empty_like(frames)
        for i in range(n):
            dx, dy = rng.uniform(-3.0, 3.0, 2)
            M = np.float32([[1, 0, dx], [0, 1, dy]])
            moved = cv2.warpAffine(frames[i], M, (W, H), borderMode=cv2.BORDER_REFLECT)
            gain = rng.uniform(0.82, 1.18) * rng.uniform(0.93, 1.07, 3).astype(np.float32)
            out[i] = frames[i] * (1 - m[i]) + moved * gain * m[i]
    elif family == "lighting_inconsistency":
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
        out = frames * (1 - m) + (face + noise) * m
    elif family == "lip_sync_shift":
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
        return real.frames.copy(), shifted
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


def render_real(seed: int, cfg: SynthConfig | None = None, low_light: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render one real video from ``seed``: ``(frames, audio, boxes)``.

    ``frames`` (N, H, W, 3) uint8 RGB, ``audio`` mono float32 at ``cfg.sample_rate``, ``boxes``
    (N, 4) float32 ``[x0, y0, x1, y1]`` face boxes. ``low_light=True`` renders a dark capture.
    """
    cfg = cfg or SynthConfig()
    rng = _rng(cfg.seed, "render_real", seed)
    ident, scene = make_identity(rng), make_scene(rng, cfg)
    r = capture(ident, scene, make_low_light(rng) if low_light else None)
    return r.frames, r.audio, r.boxes


def write_sample(path: str | os.PathLike, seed: int, cfg: SynthConfig | None = None, *, face: bool = True,
                 audio: bool = True, family: str | None = None) -> Rendered:
    """Write one synthetic video to ``path`` and return its rendering.

    ``face=False`` writes the background only (no face: boxes are NaN); ``audio=False`` writes no
    audio track; ``family`` writes a fake of that family instead of the real.
    """
    cfg = cfg or SynthConfig()
    rng = _rng(cfg.seed, "sample", seed)
    ident, scene = make_identity(rng), make_scene(rng, cfg)
    ll = make_low_light(rng) if family == "low_light" else None
    r = capture(ident, scene, ll) if face else render(ident, scene, with_face=False)
    frames, track = r.frames, r.audio
    if family is not None and face:
        frames, track = apply_family(family, r, ident, scene, rng, source=make_identity(rng), low_light=ll)
    write_video(path, frames, cfg.fps, audio=track if audio else None, sample_rate=cfg.sample_rate, crf=cfg.crf)
    return r


# =============================================================================== dataset plans


@dataclass
class _Video:
    """One file to write: where it goes and what the truth file says about it."""

    rel: str
    """Path relative to the dataset root (the manifest's ``video_id``)."""
    label: int
    family: str
    group: str


@dataclass
class _Task:
    """A real video and the fakes derived from it: rendered and written by one worker."""

    dataset: str
    root: str
    real: _Video
    identity_key: str
    scene_key: str
    low_light: bool
    fakes: list[tuple[_Video, str]] = field(default_factory=list)
    """(fake, source identity key) pairs."""


def _families_for(cfg: SynthConfig, normal_index: int) -> list[str]:
    """Families applied to the ``normal_index``-th normal-light real of a dataset (rotating)."""
    fams = [f for f in _NORMAL_FAMILIES if f in cfg.families]
    if not fams:
        return []
    k = len(fams) if cfg.fakes_per_real is None else min(cfg.fakes_per_real, len(fams))
    return [fams[(normal_index * k + j) % len(fams)] for j in range(k)]


def _dark_flags(rng: np.random.Generator, n: int, fraction: float) -> list[bool]:
    n_dark = int(round(n * fraction))
    flags = np.zeros(n, bool)
    flags[rng.permutation(n)[:n_dark]] = True
    return [bool(f) for f in flags]


def _split_counts(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int, int]:
    """(train, val, test) counts of ``n`` items; train keeps at least one item when n > 0."""
    n_test = min(n, int(round(n * test_fraction)))
    if test_fraction > 0 and n >= 2:
        n_test = max(1, n_test)
    n_val = min(n - n_test, int(round(n * val_fraction)))
    if val_fraction > 0 and n - n_test >= 2:
        n_val = max(1, n_val)
    if n > 0 and n - n_test - n_val < 1:
        if n_val > 0:
            n_val -= 1
        else:
            n_test -= 1
    return n - n_val - n_test, n_val, n_test


def _plan_ffpp(cfg: SynthConfig, root: Path) -> tuple[list[_Task], dict[str, Any]]:
    rng = _rng(cfg.seed, "ffpp", "plan")
    ids = [f"{int(i):03d}" for i in rng.choice(1000, 2 * cfg.ffpp_pairs, replace=False)]
    pairs = [(ids[2 * p], ids[2 * p + 1]) for p in range(cfg.ffpp_pairs)]
    dark = _dark_flags(rng, len(pairs), cfg.low_light_fraction)
    tasks: list[_Task] = []
    normal_index = 0
    for (a, b), is_dark in zip(pairs, dark):
        for target, source in ((a, b), (b, a)):
            real = _Video(f"original_sequences/youtube/c23/videos/{target}.mp4", 0, "real", target)
            task = _Task("ffpp", str(root), real, identity_key=target, scene_key=target, low_light=is_dark)
            fams = (["low_light"] if "low_light" in cfg.families else []) if is_dark else _families_for(cfg, normal_index)
            normal_index += 0 if is_dark else 1
            for fam in fams:
                rel = f"manipulated_sequences/{FAMILY_FOLDERS[fam]}/c23/videos/{target}_{source}.mp4"
                task.fakes.append((_Video(rel, 1, fam, target), source))
            tasks.append(task)
    # official-format splits; normal and low-light pairs are interleaved in proportion before
    # cutting test / val / train, so that each split gets its share of both captures
    keyed = []
    for want_dark in (False, True):
        group = [p for p, d in zip(pairs, dark) if d == want_dark]
        order = rng.permutation(len(group))
        keyed += [((j + 0.5) / len(group), want_dark, group[i]) for j, i in enumerate(order)]
    ordered = [p for _, _, p in sorted(keyed, key=lambda x: (x[0], x[1]))]
    _, n_val, n_test = _split_counts(len(ordered), cfg.val_fraction, cfg.test_fraction)
    splits = {
        "train": [list(p) for p in ordered[n_test + n_val :]],
        "val": [list(p) for p in ordered[n_test : n_test + n_val]],
        "test": [list(p) for p in ordered[:n_test]],
    }
    return tasks, {"splits": splits}


def _plan_celebdf(cfg: SynthConfig, root: Path) -> tuple[list[_Task], dict[str, Any]]:
    rng = _rng(cfg.seed, "celebdf", "plan")
    n_id, n_vid = cfg.celebdf_identities, cfg.celebdf_videos_per_identity
    per_real = len(_families_for(cfg, 0))
    if n_id - 1 < max(per_real, 1):
        raise ValueError(f"celebdf_identities={n_id} must exceed the families per real ({per_real})")
    celeb = [(i, k) for i in range(n_id) for k in range(n_vid)]
    dark = _dark_flags(rng, len(celeb), cfg.low_light_fraction)
    tasks: list[_Task] = []
    normal_index = 0
    for (i, k), is_dark in zip(celeb, dark):
        name = f"id{i}_{k:04d}"
        real = _Video(f"Celeb-real/{name}.mp4", 0, "real", f"id{i}")
        task = _Task("celebdf", str(root), real, identity_key=f"id{i}", scene_key=name, low_light=is_dark)
        fams = (["low_light"] if "low_light" in cfg.families else []) if is_dark else _families_for(cfg, normal_index)
        normal_index += 0 if is_dark else 1
        others = [j for j in range(n_id) if j != i]
        sources = [others[j] for j in rng.permutation(len(others))[: len(fams)]]
        for fam, j in zip(fams, sources):
            rel = f"Celeb-synthesis/id{i}_id{j}_{k:04d}.mp4"
            task.fakes.append((_Video(rel, 1, fam, f"id{i}"), f"id{j}"))
        tasks.append(task)
    yt_dark = _dark_flags(rng, cfg.celebdf_youtube, cfg.low_light_fraction)
    for n, is_dark in enumerate(yt_dark):
        name = f"{n:05d}"
        real = _Video(f"YouTube-real/{name}.mp4", 0, "real", f"yt{name}")
        tasks.append(_Task("celebdf", str(root), real, identity_key=f"yt{name}", scene_key=f"yt{name}", low_light=is_dark))
    # test list: whole identities (their reals and the fakes made from them) + some YouTube reals
    _, _, n_test_ids = _split_counts(n_id, 0.0, cfg.test_fraction)
    test_ids = {int(i) for i in rng.permutation(n_id)[:n_test_ids]}
    _, _, n_test_yt = _split_counts(cfg.celebdf_youtube, 0.0, cfg.test_fraction)
    test_yt = {int(i) for i in rng.permutation(cfg.celebdf_youtube)[:n_test_yt]}
    lines = [f"1 YouTube-real/{n:05d}.mp4" for n in sorted(test_yt)]
    for t in tasks:
        if t.real.rel.startswith("Celeb-real/") and int(t.identity_key[2:]) in test_ids:
            lines.append(f"1 {t.real.rel}")
    for t in tasks:
        if t.real.rel.startswith("Celeb-real/") and int(t.identity_key[2:]) in test_ids:
            lines += [f"0 {fake.rel}" for fake, _ in t.fakes]
    return tasks, {"test_list": lines}


def _random_name(rng: np.random.Generator, taken: set[str]) -> str:
    letters = np.array(list(string.ascii_lowercase))
    while True:
        name = "".join(rng.choice(letters, 10))
        if name not in taken:
            taken.add(name)
            return name


def _plan_dfdc(cfg: SynthConfig, root: Path) -> tuple[list[_Task], dict[str, Any]]:
    rng = _rng(cfg.seed, "dfdc", "plan")
    n_real = cfg.dfdc_parts * cfg.dfdc_reals_per_part
    dark = _dark_flags(rng, n_real, cfg.low_light_fraction)
    taken: set[str] = set()
    reals = [(k, _random_name(rng, taken)) for k in range(cfg.dfdc_parts) for _ in range(cfg.dfdc_reals_per_part)]
    tasks: list[_Task] = []
    metadata: dict[int, dict[str, dict[str, Any]]] = {k: {} for k in range(cfg.dfdc_parts)}
    normal_index = 0
    for r, ((part, name), is_dark) in enumerate(zip(reals, dark)):
        folder = f"dfdc_train_part_{part}"
        real = _Video(f"{folder}/{name}.mp4", 0, "real", f"{name}.mp4")
        task = _Task("dfdc", str(root), real, identity_key=name, scene_key=name, low_light=is_dark)
        metadata[part][f"{name}.mp4"] = {"label": "REAL", "split": "train", "original": None}
        fams = (["low_light"] if "low_light" in cfg.families else []) if is_dark else _families_for(cfg, normal_index)
        normal_index += 0 if is_dark else 1
        others = [o for o in range(n_real) if o != r]
        for fam in fams:
            source = reals[others[int(rng.integers(len(others)))]][1] if others else f"{name}-src"
            fake_name = _random_name(rng, taken)
            task.fakes.append((_Video(f"{folder}/{fake_name}.mp4", 1, fam, f"{name}.mp4"), source))
            metadata[part][f"{fake_name}.mp4"] = {"label": "FAKE", "split": "train", "original": f"{name}.mp4"}
        tasks.append(task)
    return tasks, {"metadata": metadata}


_PLANNERS: dict[str, Callable[[SynthConfig, Path], tuple[list[_Task], dict[str, Any]]]] = {
    "ffpp": _plan_ffpp,
    "celebdf": _plan_celebdf,
    "dfdc": _plan_dfdc,
}


# =============================================================================== generation


def _identity(cfg: SynthConfig, dataset: str, key: str) -> Identity:
    return make_identity(_rng(cfg.seed, dataset, "identity", key))


def _run_task(args: tuple[_Task, SynthConfig]) -> dict[str, dict[str, Any]]:
    """Render a real and its fakes, write them, and return their truth entries."""
    task, cfg = args
    cv2.setNumThreads(1)
    ident = _identity(cfg, task.dataset, task.identity_key)
    srng = _rng(cfg.seed, task.dataset, "scene", task.scene_key)
    scene = make_scene(srng, cfg)
    ll = make_low_light(srng) if task.low_light else None
    real = capture(ident, scene, ll)
    root = Path(task.root)
    light = "low" if ll is not None else "normal"
    boxes = [[round(float(v), 2) for v in box] for box in real.boxes]
    truth: dict[str, dict[str, Any]] = {}

    def emit(video: _Video, frames: np.ndarray, audio: np.ndarray) -> None:
        write_video(root / video.rel, frames, cfg.fps, audio=audio, sample_rate=cfg.sample_rate, crf=cfg.crf, threads=1)
        truth[video.rel] = {"label": video.label, "family": video.family, "boxes": boxes, "group": video.group, "light": light}

    emit(task.real, real.frames, real.audio)
    for fake, source_key in task.fakes:
        frng = _rng(cfg.seed, task.dataset, "fake", fake.rel)
        source = _identity(cfg, task.dataset, source_key)
        frames, audio = apply_family(fake.family, real, ident, scene, frng, source=source, low_light=ll)
        emit(fake, frames, audio)
    return truth


def _write_json(path: Path, obj: Any, **kw: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, **kw))
    os.replace(tmp, path)


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _write_metadata(dataset: str, root: Path, extra: dict[str, Any]) -> None:
    if dataset == "ffpp":
        for split, pairs in extra["splits"].items():
            _write_json(root / "splits" / f"{split}.json", pairs, indent=2)
    elif dataset == "celebdf":
        _write_text(root / "List_of_testing_videos.txt", "\n".join(extra["test_list"]))  # no trailing newline
    elif dataset == "dfdc":
        for part, meta in extra["metadata"].items():
            _write_json(root / f"dfdc_train_part_{part}" / "metadata.json", dict(sorted(meta.items())),
                        separators=(",", ":"))


def generate(root: str | os.PathLike, cfg: SynthConfig | None = None,
             progress: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Write the synthetic benchmark under ``root`` and return a summary.

    ``root/<dataset>/`` receives the videos, the dataset's real-format metadata and
    ``synthetic_truth.json``; ``root/synthetic_summary.json`` records the config and counts.
    Rendering and encoding run in ``cfg.workers`` processes; output does not depend on it.
    """
    cfg = cfg or SynthConfig()
    unknown = set(cfg.datasets) - set(DATASETS)
    if unknown:
        raise ValueError(f"unknown datasets {sorted(unknown)}; known: {DATASETS}")
    bad = set(cfg.families) - set(FAMILIES)
    if bad:
        raise ValueError(f"unknown families {sorted(bad)}; known: {FAMILIES}")
    if cfg.height % 2 or cfg.width % 2:
        raise ValueError("height and width must be even (H.264 yuv420p)")
    say = progress or (lambda _msg: None)
    root = Path(root)
    t_start = time.time()
    plans = {ds: _PLANNERS[ds](cfg, root / ds) for ds in cfg.datasets}
    jobs = [(task, cfg) for ds in cfg.datasets for task in plans[ds][0]]
    n_videos = sum(1 + len(t.fakes) for t, _ in jobs)
    say(f"synthetic benchmark: {n_videos} videos ({len(jobs)} reals with their fakes) -> {root} "
        f"[seed {cfg.seed}, {cfg.width}x{cfg.height}, {cfg.num_frames} frames @ {cfg.fps:g} fps, {cfg.workers} workers]")
    truths: dict[str, dict[str, dict[str, Any]]] = {ds: {} for ds in cfg.datasets}
    done = 0

    def collect(i: int, result: dict[str, dict[str, Any]]) -> None:
        nonlocal done
        ds = jobs[i][0].dataset
        truths[ds].update(result)
        done += len(result)
        if (i + 1) % max(1, len(jobs) // 10) == 0 or done == n_videos:
            say(f"  {done}/{n_videos} videos written ({time.time() - t_start:.1f} s)")

    if cfg.workers > 1 and len(jobs) > 1:
        # spawn, not fork: forking a process whose thread pools (OpenMP, OpenCV, torch) are running
        # can deadlock the children (seen when the generator runs inside a test or Ray process)
        ctx = mp.get_context("spawn")
        with ctx.Pool(cfg.workers) as pool:
            for i, result in enumerate(pool.imap(_run_task, jobs, chunksize=1)):
                collect(i, result)
    else:
        for i, job in enumerate(jobs):
            collect(i, _run_task(job))

    summary: dict[str, Any] = {"root": str(root), "seed": cfg.seed, "config": asdict(cfg), "datasets": {}}
    for ds in cfg.datasets:
        ds_root = root / ds
        _write_metadata(ds, ds_root, plans[ds][1])
        truth = dict(sorted(truths[ds].items()))
        _write_json(ds_root / "synthetic_truth.json", truth)
        fams: dict[str, int] = {}
        for entry in truth.values():
            fams[entry["family"]] = fams.get(entry["family"], 0) + 1
        summary["datasets"][ds] = {
            "root": str(ds_root),
            "videos": len(truth),
            "real": sum(1 for e in truth.values() if e["label"] == 0),
            "fake": sum(1 for e in truth.values() if e["label"] == 1),
            "low_light_real": sum(1 for e in truth.values() if e["label"] == 0 and e["light"] == "low"),
            "families": dict(sorted(fams.items())),
        }
    summary["seconds"] = round(time.time() - t_start, 2)
    _write_json(root / "synthetic_summary.json", {k: v for k, v in summary.items() if k != "seconds"}, indent=2)
    for ds, info in summary["datasets"].items():
        say(f"  {ds}: {info['videos']} videos ({info['real']} real, {info['fake']} fake) {info['families']}")
    say(f"done in {summary['seconds']:.1f} s")
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``python -m data_pipeline.synthetic --out DIR [--seed N] [--scale tiny|small|default]``."""
    parser = argparse.ArgumentParser(
        prog="python -m data_pipeline.synthetic",
        description="Generate the synthetic deepfake benchmark in the FF++, Celeb-DF v2 and DFDC layouts.",
    )
    parser.add_argument("--out", required=True, help="output folder (datasets go to OUT/ffpp, OUT/celebdf, OUT/dfdc)")
    parser.add_argument("--seed", type=int, default=0, help="master seed (default 0)")
    parser.add_argument("--scale", choices=sorted(SCALES), default="default", help="size preset (default: default)")
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, help="layouts to write (default: all three)")
    parser.add_argument("--families", nargs="+", choices=FAMILIES, help="manipulation families (default: all)")
    parser.add_argument("--workers", type=int, help="parallel processes (default 2)")
    parser.add_argument("--size", type=int, help="frame height and width in pixels (even)")
    parser.add_argument("--frames", type=int, help="frames per video")
    parser.add_argument("--fps", type=float, help="frame rate")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    args = parser.parse_args(argv)
    overrides: dict[str, Any] = {"seed": args.seed}
    if args.datasets:
        overrides["datasets"] = tuple(args.datasets)
    if args.families:
        overrides["families"] = tuple(args.families)
    if args.workers is not None:
        overrides["workers"] = args.workers
    if args.size is not None:
        overrides["height"] = overrides["width"] = args.size
    if args.frames is not None:
        overrides["num_frames"] = args.frames
    if args.fps is not None:
        overrides["fps"] = args.fps
    try:
        cfg = config_for_scale(args.scale, **overrides)
        generate(args.out, cfg, progress=None if args.quiet else lambda m: print(m, flush=True))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
