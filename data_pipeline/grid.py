"""The codec-grid view: the CM specialist's input, a face patch that keeps the codec's block grid.

Block codecs (JPEG, MPEG-2, H.264) transform and quantise the frame in blocks on a fixed grid: 8x8
luma blocks, and with 4:2:0 chroma, 16x16 macroblocks. A face compressed twice (re-encoded, or a
pasted face that went through a low-quality JPEG) carries two quantisations on that grid. Resizing
the face crop to the model's size (as the other views do) resamples the grid away: a 83-px crop
resized to 64 px puts block edges every 6.2 px, blurred. This view does not resample: it cuts a
``size x size`` patch from the decoded frame, centred on the face and with its corner on a
multiple of :data:`ALIGN` (16: both the luma and the chroma grid), before any stage filter (CLAHE
and bilateral filtering would smooth the block edges too). CM's 8x8, stride-8 ``dct_analyzer``
branch then sees exactly one codec block per step, like a learnt block DCT.

Real faces are larger than the patch at full resolution (a 1080p face is 200-400 px): the patch
then shows the middle of the face (nose, cheeks, mouth), at the frame's own resolution.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["ALIGN", "grid_origin", "grid_patch"]

#: the patch corner's alignment in frame pixels (a multiple of the 8x8 transform and of the 16x16
#: macroblock, so that chroma blocks of 4:2:0 video align too)
ALIGN = 16


def grid_origin(box: Sequence[float], size: int, width: int, height: int) -> tuple[int, int]:
    """Top-left corner ``(x0, y0)`` of the ``size`` patch centred on ``box`` (frame pixels), on the
    :data:`ALIGN` grid and inside the frame where it fits (else at 0)."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2

    def axis(c: float, extent: int) -> int:
        top = max(extent - size, 0) // ALIGN * ALIGN  # the last aligned corner inside the frame
        return int(min(max(round((c - size / 2) / ALIGN) * ALIGN, 0), top))

    return axis(cx, width), axis(cy, height)


def grid_patch(frame: np.ndarray, box: Sequence[float], size: int) -> np.ndarray:
    """The ``(size, size, 3)`` uint8 patch of an RGB frame ``(H, W, 3)`` at :func:`grid_origin`:
    pixels as decoded, not resampled; a frame smaller than the patch is zero-padded right and
    below."""
    h, w = frame.shape[:2]
    x0, y0 = grid_origin(box, size, w, h)
    out = np.zeros((size, size, 3), np.uint8)
    region = frame[y0:y0 + size, x0:x0 + size]
    out[:region.shape[0], :region.shape[1]] = region
    return out
