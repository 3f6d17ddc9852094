"""Two-person videos (DFDC layout): two identities side by side in one room, and fakes in which
exactly one of the two faces is manipulated.

The frame is two persons wide (``2 * SynthConfig.width`` x ``SynthConfig.height``): person 0
stands in the left half, person 1 in the right half, each drawn exactly like the person of a
one-person video (same face size, its own head motion, speech and mouth) over one background,
under one light. Each person is exposed with the gain its one-person video would get (a
face-priority exposure: each face looks as in a one-person video), the background with the mean
of the two gains. Person 1 is drawn over person 0 (only their clothes can overlap; the faces
never do).

Audio: both people talk at once, each voice following its own mouth; the track is
``clip(0.7 * (voice_0 + voice_1))``.

A fake of a two-person real manipulates one face (:func:`pair_fake`): the family is applied to
that person's half of the real as a one-person view (that person's face masks, boxes, mouth and
voice), so every family acts inside that face's region only (the frame-level families - double
compression, resolution mismatch, flicker, lighting, low-light swap - are restricted to that
face's box or mask as in one-person videos), and ``lip_sync_shift`` shifts that person's voice
only, before the mix. Outside the manipulated face's region the fake's frames equal the real's
rendering.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .config import SynthConfig
from .face import _render_canvas
from .families import LowLight, _darken, _sensor_noise, _to_u8, apply_family
from .rendering import Rendered, _auto_exposure, _layers, _voice
from .scenes import Identity, Scene, make_scene, render_background

#: Each voice's gain in the two-person mix.
MIX_GAIN = 0.7


def make_pair_scenes(rng: np.random.Generator, cfg: SynthConfig) -> tuple[Scene, Scene]:
    """The scenes of the two people of a two-person video (frame ``2 * cfg.width`` wide).

    Both share the first draw's room (background, light, noise); each person has its own place,
    head motion, speech and face texture (the second draw's)."""
    room, other = make_scene(rng, cfg), make_scene(rng, cfg)
    left = replace(room, width=2 * cfg.width, person_width=cfg.width, cx=room.cx / 2)
    right = replace(left, cx=0.5 + other.cx / 2, cy=other.cy, motion=other.motion, mouth=other.mouth, seed=other.seed)
    return left, right


def mix_voices(voices: list[np.ndarray]) -> np.ndarray:
    """The two-person audio track: both voices summed at :data:`MIX_GAIN` each, clipped."""
    return np.clip(MIX_GAIN * (voices[0] + voices[1]), -1, 1).astype(np.float32)


def render_pair(idents: tuple[Identity, Identity], scenes: tuple[Scene, Scene]) -> list[Rendered]:
    """Render a two-person video: one :class:`Rendered` view per person.

    The views share ``frames`` and ``clean`` (the whole two-person frame); each has its own
    person's ``boxes``, ``face_masks`` (visible face skin), ``mouth``, ``exposure`` and ``audio``
    (that person's voice alone; the video's track is :func:`mix_voices` of the views' audio)."""
    s0 = scenes[0]
    n, H, W = s0.num_frames, s0.height, s0.width
    cvs = [_render_canvas(ident, sc) for ident, sc in zip(idents, scenes)]
    # each person exposed as its one-person video would be (face-priority exposure), the room at
    # the mean gain: a face's crop looks like a one-person video's face
    gains = [_auto_exposure(cv) for cv in cvs]
    comp = np.empty((n, H, W, 3), np.float32)
    comp[:] = render_background(s0) * np.float32((gains[0] + gains[1]) / 2)
    masks = np.zeros((2, n, H, W), np.uint8)
    boxes = np.full((2, n, 4), np.nan, np.float32)
    for k, (ident, sc, cv) in enumerate(zip(idents, scenes, cvs)):
        mouth = np.array(sc.mouth, np.float32)
        for i, (warped, box) in enumerate(_layers(ident, sc, cv, mouth, np.array(sc.light_tint, np.float32))):
            cols = np.flatnonzero(warped[..., 3].any(axis=0))  # composite where the person is
            xs = slice(int(cols[0]), int(cols[-1]) + 1) if cols.size else slice(0, 0)
            al = warped[:, xs, 3:4].astype(np.float32) / 255.0
            comp[i, :, xs] = comp[i, :, xs] * (1 - al) + warped[:, xs, :3].astype(np.float32) * (gains[k] / 255.0) * al
            if k == 1:  # person 1 hides what it covers of person 0's face
                masks[0, i] = masks[0, i] * (warped[..., 3] < 128)
            masks[k, i] = warped[..., 4]
            boxes[k, i] = box
    clean = np.minimum(comp, 1.0)
    rng = np.random.default_rng(s0.seed + 1)
    noise = rng.standard_normal(clean.shape, dtype=np.float32) * np.float32(s0.noise_sigma / 255.0)
    frames = np.clip((clean + noise) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    views = []
    for k, (ident, sc) in enumerate(zip(idents, scenes)):
        mouth = np.array(sc.mouth, np.float32)
        voice = _voice(ident, sc, mouth, rng if k == 0 else np.random.default_rng(sc.seed + 1))
        views.append(Rendered(frames=frames, audio=voice, boxes=boxes[k], face_masks=masks[k], clean=clean,
                              mouth=mouth, exposure=gains[k]))
    return views


def capture_pair(idents: tuple[Identity, Identity], scenes: tuple[Scene, Scene],
                 low_light: LowLight | None = None) -> list[Rendered]:
    """:func:`render_pair`, optionally through a low-light capture (as :func:`.families.capture`)."""
    views = render_pair(idents, scenes)
    if low_light is not None:
        rng = np.random.default_rng(scenes[0].seed + 2)
        dark = _darken(views[0].clean, low_light)
        frames = _to_u8(dark + _sensor_noise(rng, dark.shape, low_light.noise))
        views = [replace(v, frames=frames, clean=dark) for v in views]
    return views


def _half(view: Rendered, scene: Scene, face: int) -> tuple[Rendered, Scene]:
    """Person ``face``'s half of the frame as a one-person view and scene (same pixels, same person)."""
    W = scene.person_width
    cols = slice(face * W, (face + 1) * W)
    half = replace(view, frames=np.ascontiguousarray(view.frames[:, :, cols]),
                   clean=np.ascontiguousarray(view.clean[:, :, cols]),
                   face_masks=np.ascontiguousarray(view.face_masks[:, :, cols]),
                   boxes=view.boxes - np.array([face * W, 0, face * W, 0], np.float32))
    return half, replace(scene, width=W, person_width=0, cx=scene.cx * 2 - face)


def pair_fake(family: str, views: list[Rendered], idents: tuple[Identity, Identity], scenes: tuple[Scene, Scene],
              face: int, rng: np.random.Generator, source: Identity | None = None,
              low_light: LowLight | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A fake ``(frames uint8, audio)`` of a two-person real in which only person ``face`` (0 =
    left, 1 = right) is manipulated by ``family`` (arguments as :func:`.families.apply_family`).

    The family runs on that person's half of the frame (a one-person view: half the cost) and
    the result is pasted back; the other half is the real's."""
    half, scene = _half(views[face], scenes[face], face)
    out, voice = apply_family(family, half, idents[face], scene, rng, source=source, low_light=low_light)
    frames = views[face].frames.copy()
    frames[:, :, face * scene.width : (face + 1) * scene.width] = out
    voices = [v.audio for v in views]
    voices[face] = voice
    return frames, mix_voices(voices)
