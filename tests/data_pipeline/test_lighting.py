"""BG's lighting cues (``data_pipeline/lighting.py``): the light on a face against the light around it."""

from __future__ import annotations

import numpy as np

from data_pipeline.lighting import CUES, lighting_cues
from tests.real_face import PHOTO_FACE_BOX, photo

N = len(CUES)


def lit_scene(face_light: tuple[float, float, float] = (1.0, 1.0, 1.0), face_from_left: bool = True) -> np.ndarray:
    """A 200x200 grey scene lit from the left (brighter left), with a 80x80 face region in the middle
    lit by ``face_light`` (RGB gains) from the left or from the right."""
    x = np.linspace(0.0, 1.0, 200, dtype=np.float32)
    ramp = 0.75 - 0.35 * x  # brighter on the left
    img = np.repeat(np.repeat(ramp[None, :, None], 200, axis=0), 3, axis=2)
    face = img[60:140, 60:140].copy()
    if not face_from_left:
        face = face[:, ::-1]
    img[60:140, 60:140] = face * np.asarray(face_light, np.float32)
    rng = np.random.default_rng(0)
    return np.clip((img + rng.normal(0, 0.01, img.shape)) * 255, 0, 255).astype(np.uint8)


def test_consistent_light_gives_no_difference_and_a_relit_face_does():
    box = [60, 60, 140, 140]
    same = lighting_cues(lit_scene(), box)
    assert same.shape == (3 * N,) and same.dtype == np.float32
    diff = same[2 * N:]
    assert np.abs(diff[:2]).max() < 0.02  # same light colour on the face and around it
    assert same[3] < 0 and same[N + 3] < 0  # both lit from the left: luminance falls to the right
    warm_from_right = lighting_cues(lit_scene(face_light=(1.3, 1.0, 0.7), face_from_left=False), box)
    wd = warm_from_right[2 * N:]
    assert wd[0] > 0.2 and wd[1] < -0.2  # a warmer face than its surround: log(R/G) up, log(B/G) down
    assert warm_from_right[3] > 0 > warm_from_right[N + 3]  # its light comes from the other side


def test_cues_of_a_real_photograph_are_finite_and_degenerate_boxes_give_zeros():
    frame = np.ascontiguousarray(photo())
    cues = lighting_cues(frame, PHOTO_FACE_BOX)
    assert np.isfinite(cues).all() and np.abs(cues).max() < 10
    assert not lighting_cues(frame, [0, 0, 1, 1]).any()
