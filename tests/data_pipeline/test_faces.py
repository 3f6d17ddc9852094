"""Face detection, clip boxes and margin crops; hit rate on the synthetic benchmark."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from data_pipeline import faces
from data_pipeline.faces import (
    Box,
    DetectorError,
    FaceDetector,
    clip_box,
    consensus_box,
    create_detector,
    crop_face,
    crop_square,
    fill_missing,
    register_detector,
    track_video,
)
from data_pipeline.sources import read_manifest
from data_pipeline.video import decode_clips


@pytest.fixture(scope="module")
def tiny_benchmark(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from data_pipeline import synthetic

    root = tmp_path_factory.mktemp("synth")
    synthetic.generate(root, synthetic.config_for_scale("tiny"), progress=None)
    return root


def test_detector_finds_synthetic_faces(tiny_benchmark: Path) -> None:
    """>= 95% of sampled frames get a box with IoU >= 0.5 vs the truth, over every family and
    every layout, with the box the pipeline uses (tracked, one per clip, gaps filled)."""
    detector = create_detector("haar")
    hits = total = 0
    per_family: dict[str, list[int]] = {}
    for ds in ("ffpp", "celebdf", "dfdc"):
        truth = json.loads((tiny_benchmark / ds / "synthetic_truth.json").read_text())
        for row in read_manifest(ds, tiny_benchmark / ds):
            decoded = decode_clips(row.path, clip_len=4, clips_per_video=8, stride=1, audio=None)
            boxes = track_video(decoded.frames, detector)
            fam = per_family.setdefault(truth[row.video_id]["family"], [0, 0])
            for idx, box in zip(decoded.indices, boxes):
                for i in idx:
                    ok = box is not None and box.iou(Box(*truth[row.video_id]["boxes"][i])) >= 0.5
                    hits += ok
                    total += 1
                    fam[0] += ok
                    fam[1] += 1
    rate = hits / total
    print(f"face hit rate {rate:.3f} over {total} frames; per family "
          + ", ".join(f"{k} {v[0] / v[1]:.2f}" for k, v in sorted(per_family.items())))
    assert total > 1000
    assert rate >= 0.95


def test_downscaled_detection_maps_boxes_back(tiny_benchmark: Path) -> None:
    truth = json.loads((tiny_benchmark / "ffpp" / "synthetic_truth.json").read_text())
    vid, entry = next((k, v) for k, v in truth.items() if v["family"] == "real")
    frame = decode_clips(tiny_benchmark / "ffpp" / vid, 1, 1, 1, None).frames[0][0]
    big = cv2.resize(frame, None, fx=6, fy=6, interpolation=cv2.INTER_CUBIC)  # 672 px > max_side
    det = create_detector("haar", max_side=160)
    small_boxes = det.detect(frame)
    big_boxes = det.detect(big)
    assert small_boxes and big_boxes
    assert big_boxes[0].iou(small_boxes[0].scaled(6.0)) > 0.6
    assert big_boxes[0].x1 <= big.shape[1] + 1 and big_boxes[0].width > 200


def test_registry() -> None:
    assert "haar" in faces.available_detectors()
    assert {"haar", "yunet", "mtcnn"} <= set(faces.registered_detectors())
    assert isinstance(create_detector("haar"), FaceDetector)
    with pytest.raises(DetectorError, match="unknown face detector 'dlib'"):
        create_detector("dlib")
    with pytest.raises(DetectorError, match="model_path"):
        create_detector("yunet")
    with pytest.raises(DetectorError, match="bad options"):
        create_detector("haar", colour="red")
    with pytest.raises(DetectorError, match="already registered"):
        register_detector("haar")(faces.HaarDetector)

    class Fixed:
        name = "fixed"

        def detect(self, frame_rgb: np.ndarray) -> list[Box]:
            return [Box(1, 2, 3, 4, 0.9)]

    register_detector("fixed-test")(Fixed)
    try:
        assert create_detector("fixed-test").detect(np.zeros((8, 8, 3), np.uint8)) == [Box(1, 2, 3, 4, 0.9)]
    finally:
        faces._REGISTRY.pop("fixed-test")


class Scripted:
    """A detector returning pre-set boxes per call (to test clip-level logic)."""

    name = "scripted"

    def __init__(self, answers: list[list[Box]]) -> None:
        self.answers = list(answers)
        self.calls = 0

    def detect(self, frame_rgb: np.ndarray) -> list[Box]:
        self.calls += 1
        return self.answers.pop(0) if self.answers else []


def test_clip_box_ignores_one_frame_false_positive() -> None:
    face = [Box(40, 40, 80, 80, 1.0), Box(42, 41, 82, 81, 2.0), Box(41, 39, 81, 79, 1.5)]
    noise = Box(0, 0, 90, 90, 5.0)  # large, confident, but seen once
    det = Scripted([[face[0], noise], [face[1]], [face[2]]])
    box = clip_box(np.zeros((4, 100, 100, 3), np.uint8), det, probes=3)
    assert det.calls == 3
    assert box is not None and (box.x0, box.y0, box.x1, box.y1) == (41, 40, 81, 80)


def test_clip_box_searches_other_frames_then_gives_up() -> None:
    det = Scripted([[], [], [], [Box(10, 10, 30, 30)]])
    box = clip_box(np.zeros((4, 64, 64, 3), np.uint8), det, probes=3)
    assert box == Box(10, 10, 30, 30) and det.calls == 4
    assert clip_box(np.zeros((4, 64, 64, 3), np.uint8), Scripted([]), probes=2) is None
    assert consensus_box([[], []]) is None


def test_fill_missing() -> None:
    a, b = Box(0, 0, 1, 1), Box(5, 5, 6, 6)
    assert fill_missing([None, a, None, None, b, None]) == [a, a, a, b, b, b]
    assert fill_missing([None, None]) == [None, None]


def test_crop_square_margin_and_clamp() -> None:
    box = Box(40, 40, 60, 80)  # 20 x 40 -> side 40 * 1.6 = 64
    assert crop_square(box, 0.3, 200, 200) == (18, 28, 82, 92)
    assert crop_square(Box(0, 0, 20, 20), 0.3, 200, 200) == (0, 0, 32, 32)  # shifted inside
    assert crop_square(Box(180, 185, 200, 200), 0.0, 200, 200) == (180, 180, 200, 200)


def test_crop_face_pads_and_resizes() -> None:
    frames = np.full((4, 50, 60, 3), 200, np.uint8)
    crops, crop_box = crop_face(frames, Box(10, 5, 50, 45), size=32, margin=0.3)  # side 64 > 50
    assert crops.shape == (4, 32, 32, 3) and crops.dtype == np.uint8
    x0, y0, x1, y1 = crop_box
    assert x1 - x0 == y1 - y0 == 64 and y0 < 0 and y1 > 50  # vertically padded
    assert crops[0, 0, 16].tolist() == [0, 0, 0] and crops[0, 16, 16].tolist() == [200, 200, 200]
    single, _ = crop_face(frames[0], Box(20, 10, 40, 30), size=16, margin=0.0)
    assert single.shape == (16, 16, 3)
    with pytest.raises(ValueError, match="outside"):
        crop_face(frames, Box(500, 500, 520, 520), size=16)


def test_box_geometry() -> None:
    a, b = Box(0, 0, 10, 10), Box(5, 0, 15, 10)
    assert a.iou(b) == pytest.approx(50 / 150)
    assert a.iou(Box(20, 20, 30, 30)) == 0.0
    assert a.scaled(2).as_list() == [0, 0, 20, 20]
    assert a.center == (5, 5) and a.area == 100


def test_detect_near_and_tracking_match_full_search(tiny_benchmark: Path) -> None:
    truth = json.loads((tiny_benchmark / "dfdc" / "synthetic_truth.json").read_text())
    vid = next(k for k, v in sorted(truth.items()) if v["family"] == "real")
    decoded = decode_clips(tiny_benchmark / "dfdc" / vid, 4, 6, 1, None)
    det = create_detector("haar")
    full = [clip_box(f, det) for f in decoded.frames]
    tracked = track_video(decoded.frames, det, probes=1)
    assert all(b is not None for b in full + tracked)
    assert all(a.iou(b) > 0.6 for a, b in zip(full, tracked))
    frame = decoded.frames[1][0]
    near = det.detect_near(frame, full[0])
    assert near and near[0].iou(full[1]) > 0.6
    assert det.detect_near(frame, Box(0, 0, 4, 4)) == []  # far too small a region
    assert track_video([np.zeros((4, 64, 64, 3), np.uint8)] * 3, det) == [None, None, None]


def test_tracking_without_detect_near_uses_full_search() -> None:
    det = Scripted([[Box(10, 10, 30, 30)], [Box(11, 10, 31, 30)]])
    assert track_video([np.zeros((4, 64, 64, 3), np.uint8)] * 2, det) == [Box(10, 10, 30, 30), Box(11, 10, 31, 30)]
    assert det.calls == 2
