"""Face detection behind one interface, and the margin crop.

* :class:`FaceDetector` is the protocol: ``detect(frame_rgb) -> list[Box]`` (boxes in the
  frame's pixels, with a score). Detectors run on a DOWNSCALED copy of the frame (longest side
  ``max_side`` px) and map their boxes back, which makes detection cheap next to decoding.
* A registry by name lets a user select a better detector when one is installed:

  - ``haar`` (default): OpenCV's frontal-face Haar cascades shipped with opencv-python-headless
    4.x (``cv2.data.haarcascades``) on a CLAHE-equalised grey frame; no extra files.
  - ``yunet``: OpenCV's YuNet CNN (``cv2.FaceDetectorYN``); needs ``model_path=`` of its ONNX
    file (not shipped in the pip wheels).
  - ``mtcnn``: facenet-pytorch's MTCNN (weights inside its wheel), when ``facenet_pytorch`` is
    importable (install it with ``--no-deps``).

  :func:`register_detector` adds more; :func:`create_detector` builds one by name.
* :meth:`DownscaledDetector.detect_batch` detects on many frames at once (MTCNN runs them as
  one batch); following faces over a video's clips is :mod:`.tracks`.
* :func:`crop_face` cuts a square around the box with a margin (a fraction of the box size added
  on each side), shifted to stay inside the frame when it fits and zero-padded when it does not,
  and resizes it to the stage size with ``cv2.INTER_AREA``.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import cv2
import numpy as np

#: default longest side (px) of the downscaled frame detectors run on
DEFAULT_MAX_SIDE = 256


class DetectorError(ValueError):
    """A detector cannot be built (unknown name, missing package or model file): one-line message."""


@dataclass(frozen=True)
class Box:
    """An axis-aligned box ``[x0, y0, x1, y1)`` in pixels with a detector score."""

    x0: float
    y0: float
    x1: float
    y1: float
    score: float = 1.0

    @property
    def width(self) -> float:
        return max(0.0, self.x1 - self.x0)

    @property
    def height(self) -> float:
        return max(0.0, self.y1 - self.y0)

    @property
    def area(self) -> float:
        return self.width * self.height

    @property
    def center(self) -> tuple[float, float]:
        return (self.x0 + self.x1) / 2.0, (self.y0 + self.y1) / 2.0

    def scaled(self, factor: float) -> "Box":
        """The box with every coordinate multiplied by ``factor`` (frame rescaling)."""
        return Box(self.x0 * factor, self.y0 * factor, self.x1 * factor, self.y1 * factor, self.score)

    def iou(self, other: "Box") -> float:
        """Intersection over union with ``other``."""
        ix = max(0.0, min(self.x1, other.x1) - max(self.x0, other.x0))
        iy = max(0.0, min(self.y1, other.y1) - max(self.y0, other.y0))
        inter = ix * iy
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0

    def as_list(self) -> list[float]:
        return [self.x0, self.y0, self.x1, self.y1]


@runtime_checkable
class FaceDetector(Protocol):
    """Anything that finds faces in an RGB uint8 frame ``(H, W, 3)``; boxes in frame pixels."""

    name: str

    def detect(self, frame_rgb: np.ndarray) -> list[Box]: ...


def downscale(frame: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """``(frame resized so its longest side is at most max_side, scale factor applied)``."""
    h, w = frame.shape[:2]
    scale = min(1.0, max_side / float(max(h, w)))
    if scale >= 1.0:
        return frame, 1.0
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA), scale


class DownscaledDetector:
    """Base class: run :meth:`detect_small` on a downscaled frame and map boxes back."""

    name = "base"

    def __init__(self, max_side: int = DEFAULT_MAX_SIDE) -> None:
        if max_side < 32:
            raise DetectorError(f"max_side must be >= 32 px, got {max_side}")
        self.max_side = int(max_side)

    def detect(self, frame_rgb: np.ndarray) -> list[Box]:
        """Faces in ``frame_rgb`` (RGB uint8), boxes in its own pixels, best first."""
        frame = np.asarray(frame_rgb)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"detect expects an RGB uint8 (H, W, 3) frame, got {frame.dtype} {frame.shape}")
        small, scale = downscale(frame, self.max_side)
        boxes = [b.scaled(1.0 / scale) for b in self.detect_small(np.ascontiguousarray(small))]
        return sorted(boxes, key=lambda b: (b.score, b.area), reverse=True)

    def detect_near(self, frame_rgb: np.ndarray, near: Box, grow: float = 2.5, face_px: int = 36) -> list[Box]:
        """Faces of about ``near``'s size in a region around it: the cheap search of a tracker.

        The region is ``grow`` x the box's side, centred on it, rescaled so the expected face is
        about ``face_px`` px (detectors work best, and fastest, on small faces); only boxes of
        0.5-2x ``near``'s size are kept. Costs a fraction of a full-frame :meth:`detect`.
        """
        frame = np.asarray(frame_rgb)
        h, w = frame.shape[:2]
        side = max(near.width, near.height, 1.0)
        cx, cy = near.center
        half = side * grow / 2.0
        x0, y0 = int(max(0.0, cx - half)), int(max(0.0, cy - half))
        x1, y1 = int(min(float(w), cx + half)), int(min(float(h), cy + half))
        if x1 - x0 < 8 or y1 - y0 < 8:
            return []
        scale = min(1.0, face_px / side)
        region = np.ascontiguousarray(frame[y0:y1, x0:x1])
        if scale < 1.0:
            size = (max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale)))
            region = cv2.resize(region, size, interpolation=cv2.INTER_AREA)
        expected = side * scale
        boxes = []
        for b in self.detect_small(region, size_range=(int(expected * 0.6), int(math.ceil(expected * 1.6)))):
            b = b.scaled(1.0 / scale)
            b = Box(b.x0 + x0, b.y0 + y0, b.x1 + x0, b.y1 + y0, b.score)
            if 0.5 <= max(b.width, b.height) / side <= 2.0:
                boxes.append(b)
        return sorted(boxes, key=lambda b: (b.score, b.area), reverse=True)

    def detect_small(self, frame_rgb: np.ndarray, size_range: tuple[int, int] | None = None) -> list[Box]:  # pragma: no cover
        """Faces in an already small frame; ``size_range`` (min, max face side in px) is a hint a
        detector may use to search fewer scales."""
        raise NotImplementedError

    def detect_batch(self, frames: Sequence[np.ndarray]) -> list[list[Box]]:
        """:meth:`detect` on each frame (a CNN detector overrides this to run them as one batch)."""
        return [self.detect(f) for f in frames]


# --------------------------------------------------------------------------- registry

_REGISTRY: dict[str, tuple[Callable[..., FaceDetector], Callable[[], bool]]] = {}


def register_detector(
    name: str, available: Callable[[], bool] = lambda: True
) -> Callable[[Callable[..., FaceDetector]], Callable[..., FaceDetector]]:
    """Decorator registering a detector factory under ``name`` (duplicates are refused).

    ``available`` tells whether its dependencies are installed (listed by :func:`available_detectors`).
    """

    def deco(factory: Callable[..., FaceDetector]) -> Callable[..., FaceDetector]:
        if name in _REGISTRY:
            raise DetectorError(f"face detector {name!r} is already registered")
        _REGISTRY[name] = (factory, available)
        return factory

    return deco


def registered_detectors() -> list[str]:
    """Every registered detector name."""
    return sorted(_REGISTRY)


def available_detectors() -> list[str]:
    """Registered detectors whose dependencies are installed (``yunet`` still needs a model file)."""
    return [n for n in sorted(_REGISTRY) if _REGISTRY[n][1]()]


def create_detector(name: str = "haar", **options: Any) -> FaceDetector:
    """Build the detector registered as ``name`` with its ``options`` (e.g. ``max_side``)."""
    if name not in _REGISTRY:
        raise DetectorError(f"unknown face detector {name!r}; registered: {', '.join(registered_detectors())}")
    factory, available = _REGISTRY[name]
    if not available():
        raise DetectorError(f"face detector {name!r} is not available: its package is not installed")
    try:
        return factory(**options)
    except TypeError as exc:
        raise DetectorError(f"face detector {name!r}: bad options {sorted(options)} ({exc})") from None


# --------------------------------------------------------------------------- detectors


@register_detector("haar", available=lambda: hasattr(cv2, "CascadeClassifier"))
class HaarDetector(DownscaledDetector):
    """OpenCV Haar cascades (shipped in ``cv2.data.haarcascades`` by opencv-python-headless 4.x).

    The downscaled frame is converted to grey and contrast-equalised with CLAHE (local
    equalisation copes with side light and dark captures far better than a global histogram
    equalisation), then searched with the primary cascade (``frontalface_alt2``); only when it
    finds nothing are the ``fallback`` cascades tried in order. Scores are the cascade's level
    weights (higher = more confident).
    """

    name = "haar"

    def __init__(
        self,
        max_side: int = DEFAULT_MAX_SIDE,
        cascade: str = "haarcascade_frontalface_alt2.xml",
        fallback: Sequence[str] = ("haarcascade_frontalface_default.xml",),
        scale_factor: float = 1.1,
        min_neighbors: int = 3,
        min_size: int = 20,
        clahe_clip: float = 3.0,
        clahe_tiles: int = 8,
    ) -> None:
        super().__init__(max_side)
        self.classifiers = [self._load(c) for c in (cascade, *fallback)]
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_size = min_size
        self.clahe = cv2.createCLAHE(clipLimit=clahe_clip, tileGridSize=(clahe_tiles, clahe_tiles)) if clahe_clip > 0 else None

    @staticmethod
    def _load(cascade: str) -> "cv2.CascadeClassifier":
        path = Path(cascade)
        if not path.is_file():
            path = Path(cv2.data.haarcascades) / cascade
        if not path.is_file():
            raise DetectorError(f"Haar cascade {cascade!r} not found (opencv-python-headless 4.x ships them)")
        classifier = cv2.CascadeClassifier(str(path))
        if classifier.empty():
            raise DetectorError(f"Haar cascade {str(path)!r} could not be loaded")
        return classifier

    def detect_small(self, frame_rgb: np.ndarray, size_range: tuple[int, int] | None = None) -> list[Box]:
        grey = cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2GRAY)
        grey = self.clahe.apply(grey) if self.clahe is not None else cv2.equalizeHist(grey)
        lo, hi = (max(self.min_size, size_range[0]), size_range[1]) if size_range else (self.min_size, 0)
        if hi and hi < lo:
            return []
        for classifier in self.classifiers:
            rects, _, weights = classifier.detectMultiScale3(
                grey,
                scaleFactor=self.scale_factor,
                minNeighbors=self.min_neighbors,
                minSize=(lo, lo),
                maxSize=(hi, hi),
                outputRejectLevels=True,
            )
            boxes = [
                Box(float(x), float(y), float(x + w), float(y + h), float(s))
                for (x, y, w, h), s in zip(np.asarray(rects).reshape(-1, 4), np.asarray(weights).reshape(-1))
            ]
            if boxes:
                return boxes
        return []


@register_detector("yunet", available=lambda: hasattr(cv2, "FaceDetectorYN"))
class YuNetDetector(DownscaledDetector):
    """OpenCV's YuNet CNN face detector; ``model_path`` is its ONNX file
    (``face_detection_yunet_2023mar.onnx`` from the OpenCV model zoo)."""

    name = "yunet"

    def __init__(
        self, model_path: str | None = None, max_side: int = 320, score_threshold: float = 0.6, nms_threshold: float = 0.3
    ) -> None:
        super().__init__(max_side)
        if not model_path or not Path(model_path).is_file():
            raise DetectorError(f"yunet needs model_path= an existing ONNX file, got {model_path!r}")
        self.model = cv2.FaceDetectorYN.create(str(model_path), "", (max_side, max_side), score_threshold, nms_threshold)

    def detect_small(self, frame_rgb: np.ndarray, size_range: tuple[int, int] | None = None) -> list[Box]:
        h, w = frame_rgb.shape[:2]
        self.model.setInputSize((w, h))
        _, faces = self.model.detect(cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2BGR))
        if faces is None:
            return []
        return [Box(float(f[0]), float(f[1]), float(f[0] + f[2]), float(f[1] + f[3]), float(f[-1])) for f in faces]


@register_detector("mtcnn", available=lambda: importlib.util.find_spec("facenet_pytorch") is not None)
class MTCNNDetector(DownscaledDetector):
    """facenet-pytorch's MTCNN (the DFDC winner's detector) on CPU or a given device."""

    name = "mtcnn"

    def __init__(self, max_side: int = 320, device: str = "cpu", threshold: float = 0.9) -> None:
        super().__init__(max_side)
        from facenet_pytorch import MTCNN  # type: ignore[import-not-found]

        self.model = MTCNN(keep_all=True, device=device, post_process=False)
        self.threshold = threshold

    def _boxes(self, boxes: Any, probs: Any) -> list[Box]:
        if boxes is None:
            return []
        return [Box(*map(float, b), float(p)) for b, p in zip(boxes, probs) if p is not None and p >= self.threshold]

    def detect_small(self, frame_rgb: np.ndarray, size_range: tuple[int, int] | None = None) -> list[Box]:
        boxes, probs = self.model.detect(frame_rgb)
        return self._boxes(boxes, probs)

    def detect_batch(self, frames: Sequence[np.ndarray]) -> list[list[Box]]:
        """All frames through MTCNN as batches: one per picture size (its pyramid stages then run
        on a stack of images, which is what makes a GPU worth it)."""
        small = [downscale(np.ascontiguousarray(f), self.max_side) for f in frames]
        out: list[list[Box]] = [[] for _ in frames]
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, (img, _) in enumerate(small):
            by_shape.setdefault(img.shape, []).append(i)
        for idx in by_shape.values():
            boxes, probs = self.model.detect(np.stack([small[i][0] for i in idx]))
            for i, b, p in zip(idx, boxes, probs):
                found = [box.scaled(1.0 / small[i][1]) for box in self._boxes(b, p)]
                out[i] = sorted(found, key=lambda b: (b.score, b.area), reverse=True)
        return out


# --------------------------------------------------------------------------- margin crop


def crop_square(box: Box, margin: float, frame_w: int, frame_h: int) -> tuple[int, int, int, int]:
    """Integer square ``(x0, y0, x1, y1)`` around ``box`` with ``margin`` x box size added on each
    side, shifted to lie inside the frame when it fits (otherwise centred, to be padded)."""
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    cx, cy = box.center
    side = max(2, int(math.ceil(max(box.width, box.height) * (1.0 + 2.0 * margin))))
    x0 = int(round(cx - side / 2.0))
    y0 = int(round(cy - side / 2.0))
    if side <= frame_w:
        x0 = min(max(x0, 0), frame_w - side)
    if side <= frame_h:
        y0 = min(max(y0, 0), frame_h - side)
    return x0, y0, x0 + side, y0 + side


def crop_face(frames: np.ndarray, box: Box, size: int, margin: float = 0.3) -> tuple[np.ndarray, list[float]]:
    """Square margin crop of ``box`` from every frame, resized to ``size`` x ``size``.

    Args:
        frames: RGB uint8 frame ``(H, W, 3)`` or clip ``(T, H, W, 3)``.
        box: the face box in frame pixels.
        size: output side S.
        margin: fraction of the box size added on each side (0.3: the square is 1.6x the box).

    Returns:
        ``(crops, crop_box)``: uint8 ``(S, S, 3)`` or ``(T, S, S, 3)`` and the square
        ``[x0, y0, x1, y1]`` in frame pixels (may reach outside the frame, which is zero-padded).
    """
    arr = np.asarray(frames)
    single = arr.ndim == 3
    clip = arr[None] if single else arr
    _, h, w, _ = clip.shape
    if box.x1 <= 0 or box.y1 <= 0 or box.x0 >= w or box.y0 >= h or box.area <= 0:
        raise ValueError(f"face box {box.as_list()} lies outside the {w}x{h} frame")
    x0, y0, x1, y1 = crop_square(box, margin, w, h)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    out = np.empty((len(clip), size, size, 3), dtype=np.uint8)
    for i, frame in enumerate(clip):
        region = frame[sy0:sy1, sx0:sx1]
        if (sx0, sy0, sx1, sy1) != (x0, y0, x1, y1):
            region = cv2.copyMakeBorder(
                np.ascontiguousarray(region), sy0 - y0, y1 - sy1, sx0 - x0, x1 - sx1, cv2.BORDER_CONSTANT, value=(0, 0, 0)
            )
        out[i] = cv2.resize(np.ascontiguousarray(region), (size, size), interpolation=cv2.INTER_AREA)
    return (out[0] if single else out), [float(x0), float(y0), float(x1), float(y1)]
