"""Stage filters: shapes, dtypes, and what each filter does to an image."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from data_pipeline.filters import Preprocessing, apply_filter, parse_preprocessing


def low_contrast_face(seed: int = 0) -> np.ndarray:
    """A dim, low-contrast 96x96 image with structure and a little noise."""
    rng = np.random.default_rng(seed)
    img = np.full((96, 96, 3), 90, np.uint8)
    cv2.ellipse(img, (48, 48), (28, 36), 0, 0, 360, (110, 100, 95), -1)
    cv2.rectangle(img, (30, 36), (66, 44), (80, 75, 75), -1)
    noise = rng.normal(0, 4, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def test_enum_values() -> None:
    assert [p.value for p in Preprocessing] == ["resize", "clahe", "clahe_bilateral"]
    assert parse_preprocessing("CLAHE") is Preprocessing.CLAHE
    with pytest.raises(ValueError, match="unknown preprocessing 'sharpen'"):
        parse_preprocessing("sharpen")


def test_resize_is_identity() -> None:
    img = low_contrast_face()
    assert np.array_equal(apply_filter(img, "resize"), img)


def test_clahe_raises_contrast_of_luminance_only() -> None:
    img = low_contrast_face()
    out = apply_filter(img, Preprocessing.CLAHE)
    assert out.dtype == np.uint8 and out.shape == img.shape
    lum_in = cv2.cvtColor(img, cv2.COLOR_RGB2LAB)[..., 0].astype(float)
    lum_out = cv2.cvtColor(out, cv2.COLOR_RGB2LAB)[..., 0].astype(float)
    assert lum_out.std() > 1.5 * lum_in.std()
    # chroma (a, b) is untouched up to colour-conversion rounding
    ab_in = cv2.cvtColor(img, cv2.COLOR_RGB2LAB)[..., 1:].astype(float)
    ab_out = cv2.cvtColor(out, cv2.COLOR_RGB2LAB)[..., 1:].astype(float)
    assert np.abs(ab_in - ab_out).mean() < 3.0


def test_bilateral_smooths_noise_after_clahe() -> None:
    img = low_contrast_face()
    c = apply_filter(img, "clahe")
    cb = apply_filter(img, "clahe_bilateral")
    lap = lambda x: cv2.Laplacian(cv2.cvtColor(x, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var()  # noqa: E731
    assert lap(cb) < 0.5 * lap(c)
    assert np.abs(cb.astype(int) - c.astype(int)).mean() < 10


def test_clip_input_and_bad_input() -> None:
    clip = np.stack([low_contrast_face(s) for s in range(4)])
    out = apply_filter(clip, "clahe_bilateral")
    assert out.shape == clip.shape and out.dtype == np.uint8
    assert np.array_equal(out[2], apply_filter(clip[2], "clahe_bilateral"))
    with pytest.raises(ValueError, match="uint8 RGB"):
        apply_filter(clip.astype(np.float32), "clahe")
    with pytest.raises(ValueError, match="uint8 RGB"):
        apply_filter(clip[..., 0], "clahe")
