"""Lighting consistency: the BG specialist's cue input, the light on a face against the light around it.

A face pasted or re-rendered into a scene keeps the light of where it came from: its colour
(chromaticity) and direction (which side of the face is brighter) disagree with the light on the
neck, hair and background around it. Lighting forensics compares the two (Johnson and Farid 2005
estimate the light direction of several objects of one picture; colour-constancy methods compare
the illuminant's colour across regions). A from-scratch network on a few hundred videos does not
learn that comparison from a filtered, resized crop (CLAHE equalises shading away), so this module
measures it on the decoded frame:

* the **face** region: the middle 80% of the face box;
* the **surround**: the ring between the box and the box grown 1.6 times (clipped to the frame);
* in each: the mean log chromaticities ``log(R/G)`` and ``log(B/G)`` (the light's colour), the mean
  log luminance, and the direction of the luminance gradient (its mean x and y components over its
  mean magnitude, after a blur that keeps shading and drops texture).

:func:`lighting_cues` returns the face's five numbers, the surround's five and their differences:
``(15,)`` float32, the shard's ``lighting`` column (60 bytes per clip), encoded by BG as one more
token (``specialists/model.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

__all__ = ["CUES", "lighting_cues"]

#: per region; the input is face, surround, face - surround
CUES = ("log_r_over_g", "log_b_over_g", "log_luminance", "gradient_x", "gradient_y")


def _region_cues(lum: np.ndarray, chroma: np.ndarray, gx: np.ndarray, gy: np.ndarray, mask: np.ndarray) -> np.ndarray:
    if not mask.any():
        return np.zeros(len(CUES), np.float32)
    mag = np.sqrt(gx[mask] ** 2 + gy[mask] ** 2).mean() + 1e-6
    return np.array([chroma[0][mask].mean(), chroma[1][mask].mean(), lum[mask].mean(),
                     gx[mask].mean() / mag, gy[mask].mean() / mag], np.float32)


def lighting_cues(frame: np.ndarray, box: Sequence[float], max_side: int = 256) -> np.ndarray:
    """``(15,)`` float32 lighting cues of an RGB uint8 frame ``(H, W, 3)`` around the face ``box``
    (frame pixels): face, surround, and face minus surround (see the module docstring). The frame's
    neighbourhood of the face is analysed at most ``max_side`` px wide."""
    h, w = frame.shape[:2]
    x0, y0, x1, y1 = (float(v) for v in box)
    cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0) / 2
    # the neighbourhood: the box grown 1.6 times, clipped to the frame
    nx0, ny0 = int(max(cx - 1.6 * half, 0)), int(max(cy - 1.6 * half, 0))
    nx1, ny1 = int(min(cx + 1.6 * half, w)), int(min(cy + 1.6 * half, h))
    if nx1 - nx0 < 4 or ny1 - ny0 < 4:
        return np.zeros(3 * len(CUES), np.float32)
    region = frame[ny0:ny1, nx0:nx1].astype(np.float32) / 255.0
    scale = min(1.0, max_side / max(region.shape[:2]))
    if scale < 1.0:
        region = cv2.resize(region, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    eps = 1.0 / 64
    r, g, b = region[..., 0] + eps, region[..., 1] + eps, region[..., 2] + eps
    lum = np.log(0.299 * r + 0.587 * g + 0.114 * b)
    chroma = (np.log(r / g), np.log(b / g))
    sigma = max(1.0, 0.15 * half * scale)  # shading, not texture
    smooth = cv2.GaussianBlur(lum, (0, 0), sigma)
    gx, gy = cv2.Sobel(smooth, cv2.CV_32F, 1, 0), cv2.Sobel(smooth, cv2.CV_32F, 0, 1)
    rh, rw = lum.shape
    yy, xx = np.mgrid[0:rh, 0:rw].astype(np.float32)
    xx, yy = xx / scale + nx0, yy / scale + ny0  # frame pixels
    inside_box = (xx >= x0) & (xx < x1) & (yy >= y0) & (yy < y1)
    face = (np.abs(xx - cx) < 0.8 * (x1 - x0) / 2) & (np.abs(yy - cy) < 0.8 * (y1 - y0) / 2)
    surround = ~inside_box
    f, s = _region_cues(lum, chroma, gx, gy, face), _region_cues(lum, chroma, gx, gy, surround)
    return np.concatenate([f, s, f - s]).astype(np.float32)
