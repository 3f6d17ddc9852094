"""Face detectors (registry, downscaling, a real photograph) and margin crops."""

from __future__ import annotations

import importlib.util
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
    create_detector,
    crop_face,
    crop_square,
    register_detector,
)
from data_pipeline.video import decode_clips, read_frames
from tests.real_face import Motion, RealFaceVideo, face_box, frame_affine, make_real_face_video


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


# --------------------------------------------------------------------------- a real face (tests/real_face.py)

HAS_MTCNN = importlib.util.find_spec("facenet_pytorch") is not None


@pytest.fixture(scope="module")
def real_face_video(tmp_path_factory: pytest.TempPathFactory) -> RealFaceVideo:
    """2.5 s of the matplotlib portrait moving and growing over a textured 1280x720 background,
    at 8 fps (20 frames: the test stays short), with an AAC tone."""
    return make_real_face_video(tmp_path_factory.mktemp("real") / "face.mp4", Motion(fps=8, seconds=2.5), audio=True)


@pytest.mark.parametrize(
    "name", ["haar", pytest.param("mtcnn", marks=pytest.mark.skipif(not HAS_MTCNN, reason="facenet_pytorch not installed"))]
)
def test_detector_finds_real_face_in_every_frame(real_face_video: RealFaceVideo, name: str) -> None:
    """Every frame of the 720p video (decoded as the pipeline does) has a detection with IoU >= 0.5
    against the annotated box carried through that frame's affine."""
    frames = read_frames(real_face_video.path)
    assert frames.shape == (20, 720, 1280, 3) and len(real_face_video.boxes) == 20
    detector = create_detector(name)
    ious = [max((b.iou(truth) for b in detector.detect(frame)), default=0.0)
            for frame, truth in zip(frames, real_face_video.boxes)]
    print(f"{name}: IoU min {min(ious):.2f}, mean {np.mean(ious):.2f} over {len(ious)} frames")
    assert min(ious) >= 0.5, [round(v, 2) for v in ious]
    batched = [max((b.iou(truth) for b in boxes), default=0.0)  # the pipeline's call (one batch for MTCNN)
               for boxes, truth in zip(detector.detect_batch(list(frames)), real_face_video.boxes)]
    assert batched == pytest.approx(ious, abs=0.02)


def test_real_face_truth_follows_the_affine() -> None:
    motion = Motion(width=640, height=360, fps=4, seconds=1.0)
    first, last = frame_affine(motion, 0), frame_affine(motion, motion.num_frames - 1)
    b0, b1 = face_box(first), face_box(last)
    assert b0.height == pytest.approx(0.30 * 360) and b1.height == pytest.approx(0.38 * 360)
    assert b0.center == pytest.approx((0.35 * 640, 180)) and b1.center == pytest.approx((0.65 * 640, 180))
    squeezed = face_box(frame_affine(Motion(squeeze=0.6), 0))
    assert squeezed.width == pytest.approx(0.6 * face_box(frame_affine(Motion(), 0)).width)
    turned = face_box(frame_affine(Motion(rotation=(25, 25)), 0))  # an oval's bounds: about the same size
    assert 0.95 < turned.area / face_box(frame_affine(Motion(), 0)).area < 1.1


@pytest.mark.skipif(not HAS_MTCNN, reason="facenet_pytorch not installed")
def test_registry_builds_mtcnn_and_every_detector_finds_nothing_on_blank() -> None:
    assert "mtcnn" in faces.available_detectors()
    blank = np.zeros((720, 1280, 3), np.uint8)
    for name in faces.available_detectors():
        if name == "yunet":  # needs model_path= an ONNX file (test_registry)
            continue
        detector = create_detector(name)
        assert isinstance(detector, FaceDetector) and detector.name == name
        assert detector.detect(blank) == []
    with pytest.raises(DetectorError, match="bad options"):
        create_detector("mtcnn", colour="red")
