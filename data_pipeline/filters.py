"""Stage filters applied to face crops, identically at preparation and at inference.

* ``resize``: nothing beyond the crop's resize to the stage size (FF++ stage).
* ``clahe``: Contrast Limited Adaptive Histogram Equalisation on the L channel of CIE LAB, so
  contrast is equalised without shifting colours (Celeb-DF stage).
* ``clahe_bilateral``: CLAHE, then an edge-preserving bilateral filter that removes the noise
  CLAHE amplifies (DFDC stage).

Parameters are module constants so preparation and inference cannot drift apart.
"""

from __future__ import annotations

from enum import Enum

import cv2
import numpy as np

#: CLAHE contrast limit and tile grid (OpenCV's usual defaults for photographs)
CLAHE_CLIP_LIMIT = 2.0
CLAHE_TILE_GRID = (8, 8)
#: bilateral filter: neighbourhood diameter (px) and colour / space sigmas
BILATERAL_DIAMETER = 5
BILATERAL_SIGMA_COLOR = 50.0
BILATERAL_SIGMA_SPACE = 50.0


class Preprocessing(str, Enum):
    """The stage filter applied to face crops (its value is the shard's ``preprocessing`` column)."""

    RESIZE = "resize"
    CLAHE = "clahe"
    CLAHE_BILATERAL = "clahe_bilateral"

    def __str__(self) -> str:
        return self.value


def parse_preprocessing(kind: Preprocessing | str) -> Preprocessing:
    """``kind`` as a :class:`Preprocessing`; a clear one-line ``ValueError`` when unknown."""
    if isinstance(kind, Preprocessing):
        return kind
    try:
        return Preprocessing(str(kind).lower())
    except ValueError:
        known = ", ".join(p.value for p in Preprocessing)
        raise ValueError(f"unknown preprocessing {kind!r}; known: {known}") from None


def clahe(frame_rgb: np.ndarray) -> np.ndarray:
    """CLAHE on the L channel of LAB of an RGB uint8 frame."""
    lab = cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2LAB)
    eq = cv2.createCLAHE(clipLimit=CLAHE_CLIP_LIMIT, tileGridSize=CLAHE_TILE_GRID)
    lab[..., 0] = eq.apply(np.ascontiguousarray(lab[..., 0]))
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


def bilateral(frame_rgb: np.ndarray) -> np.ndarray:
    """Edge-preserving bilateral smoothing of an RGB uint8 frame."""
    return cv2.bilateralFilter(frame_rgb, BILATERAL_DIAMETER, BILATERAL_SIGMA_COLOR, BILATERAL_SIGMA_SPACE)


def apply_filter(frame_rgb: np.ndarray, kind: Preprocessing | str) -> np.ndarray:
    """Apply the stage filter ``kind`` to an RGB uint8 frame ``(H, W, 3)`` or clip ``(T, H, W, 3)``.

    Returns a new uint8 array of the same shape (``resize`` returns the input unchanged: the
    resize itself is part of the face crop).
    """
    kind = parse_preprocessing(kind)
    arr = np.asarray(frame_rgb)
    if arr.dtype != np.uint8 or arr.ndim not in (3, 4) or arr.shape[-1] != 3:
        raise ValueError(f"apply_filter expects uint8 RGB (H, W, 3) or (T, H, W, 3), got {arr.dtype} {arr.shape}")
    if kind is Preprocessing.RESIZE:
        return arr
    if arr.ndim == 4:
        return np.stack([apply_filter(f, kind) for f in arr])
    arr = np.ascontiguousarray(arr)
    out = clahe(arr)
    if kind is Preprocessing.CLAHE_BILATERAL:
        out = bilateral(out)
    return out
