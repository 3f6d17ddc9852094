"""CM's codec-grid view (``data_pipeline/grid.py``): a double-compressed face keeps its trace there,
and a resampled crop loses it."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from data_pipeline.clips import ClipConfig
from data_pipeline.faces import Box, crop_face
from data_pipeline.grid import ALIGN, grid_origin, grid_patch
from specialists.branches import clip_view
from specialists.registry import InputView
from tests.real_face import PHOTO_FACE_BOX, photo


def jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def block_edge_ratio(img: np.ndarray) -> float:
    """Mean luma step across columns and rows on the 8-px grid, over the mean step elsewhere: about
    1 without blocks, well above 1 with 8x8 blocking at the image's own grid."""
    y = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float64)
    dx, dy = np.abs(np.diff(y, axis=1)), np.abs(np.diff(y, axis=0))
    on_x = (np.arange(dx.shape[1]) % 8) == 7  # the step between column 8k-1 and 8k
    on_y = (np.arange(dy.shape[0]) % 8) == 7
    on = np.concatenate([dx[:, on_x].ravel(), dy[on_y].ravel()]).mean()
    off = np.concatenate([dx[:, ~on_x].ravel(), dy[~on_y].ravel()]).mean()
    return float(on / off)


@pytest.fixture(scope="module")
def frames() -> dict[str, np.ndarray]:
    """A real face in a 480x512 frame, compressed once (quality 90) and twice (quality 10 on the
    frame's grid first, then quality 90): what re-encoding leaves."""
    frame = np.ascontiguousarray(photo()[:480])
    return {"single": jpeg(frame, 90), "double": jpeg(jpeg(frame, 10), 90)}


def test_grid_view_keeps_a_double_compression_trace_that_a_resampled_crop_loses(frames):
    box = Box(*PHOTO_FACE_BOX)
    grid = {k: grid_patch(f, box.as_list(), 64) for k, f in frames.items()}
    x0, y0 = grid_origin(box.as_list(), 64, 512, 480)
    assert x0 % ALIGN == 0 and y0 % ALIGN == 0
    assert np.array_equal(grid["double"], frames["double"][y0:y0 + 64, x0:x0 + 64])  # not resampled
    # a model-sized crop of the same face, resized from its ~300 px to 64 (what the other views see)
    resampled = {k: crop_face(f, box, 64, 0.3)[0] for k, f in frames.items()}
    ratio = {f"{view}/{k}": block_edge_ratio(img[k]) for view, img in (("grid", grid), ("resampled", resampled))
             for k in frames}
    assert ratio["grid/double"] > 1.5 * ratio["grid/single"], ratio
    assert ratio["grid/single"] < 1.2, ratio
    assert abs(ratio["resampled/double"] - ratio["resampled/single"]) < 0.15, ratio
    # CM's branches see the patch itself (the grid view of a one-frame clip is that frame)
    t = torch.from_numpy(grid["double"]).permute(2, 0, 1).float()[None, None]
    assert torch.equal(clip_view(t, InputView.GRID), t[:, 0])


def test_patch_corner_is_on_the_grid_and_small_frames_are_padded():
    assert grid_origin([100, 100, 200, 200], 64, 1920, 1080) == (112, 112)
    assert grid_origin([0, 0, 10, 10], 64, 1920, 1080) == (0, 0)
    assert grid_origin([1900, 1060, 1920, 1080], 64, 1920, 1080) == (1856, 1008)  # 1080 - 64 -> 1008 on the grid
    small = np.full((40, 50, 3), 7, np.uint8)
    patch = grid_patch(small, [10, 10, 30, 30], 64)
    assert patch.shape == (64, 64, 3) and (patch[:40, :50] == 7).all() and not patch[40:].any()
    with pytest.raises(ValueError, match="grid_size"):
        ClipConfig(grid_size=40)
