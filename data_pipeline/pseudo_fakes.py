"""Self-blended pseudo-fakes (SBI; Shiohara and Yamasaki, CVPR 2022), made from real face clips.

A pseudo-fake is a real face blended with a slightly altered copy of itself: the copy's colours and
sharpness are changed and it is shifted and scaled a little, then pasted back through a soft,
blurred face mask. What is left are the traces every face-replacement method shares (a blending
boundary, a colour and frequency mismatch between the inner face and its surround, a small
misalignment) without any one method's own fingerprint, so a detector trained on them learns
those traces rather than a training method's, and generalises to manipulations it never saw.

Here every pseudo-fake is made from a clip row of the shards, in the training stream
(:func:`replace_fakes_with_pseudo_fakes`, called by the workers' collate function): each real
clip is an ``(T, S, S, 3)`` margin crop whose face box is centred and fills ``1 / (1 + 2 margin)``
of the side (:func:`~data_pipeline.faces.crop_square`), and its codec-grid patch (the centre frame,
native pixels) holds the same face. One :class:`BlendDraw` (random choices in face-relative units)
is drawn per clip and applied to every frame and to the grid patch, so a clip's frames stay alike
and both views show the same blend. Rows not chosen are passed on untouched, and a pseudo-fake is a
new row: the real clip it came from stays in the batch as it was.

What a blended pseudo-fake does not change: the clip's audio, sync curves and lighting cues
(computed when the shards were prepared, from frames this module never sees). A blended face with
the original's lighting cues is still labelled fake, so BG learns more from its image branches there.

Blending leaves the voice in sync with the mouth, so no blended pseudo-fake stands for a dubbed or
re-timed voice. ``av_shift`` pseudo-fakes do, for the specialists that read the sync curves (AV):
the same real clip with its audio moved 0.24-0.52 s, which moves the curves' mouth-voice
correlation peak (at offset 0 for a real clip) by as many offset steps. The curves are shifted
along their offset axis, the offsets that leave one end coming back at the other: far from the
peak, both ends hold the weak correlation of unrelated mouth and voice. (The clip's log-mel window
is kept: a shifted voice is still a natural voice.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import cv2
import numpy as np

__all__ = ["METHODS", "PseudoFakes", "BlendDraw", "FaceGeometry", "draw_blend", "self_blend",
           "crop_geometry", "grid_geometry", "pseudo_fake_row", "av_shifted_row", "draw_av_shift",
           "has_sync", "replace_fakes_with_pseudo_fakes"]

#: pseudo-fake methods a stage can ask for (``method: sbi+av_shift`` asks for both)
METHODS = ("sbi", "av_shift")
#: ``av_shift``: the audio moves this many sync offset steps (of 1/25 s) either way
AV_SHIFT_STEPS = (6, 13)
#: the crop margin of :class:`~data_pipeline.clips.ClipConfig` (its default, which ``prepare`` uses)
CROP_MARGIN = 0.3
#: the codec-grid alignment of :mod:`.grid` (kept in step by a test)
GRID_ALIGN = 16
#: the ``method`` of a pseudo-fake row, per pseudo-fake method
PSEUDO_METHOD = {"sbi": "pseudo_sbi", "av_shift": "pseudo_av_shift"}


@dataclass(frozen=True)
class PseudoFakes:
    """A stage's pseudo-fakes: ``pseudo_fakes: {method: sbi, ratio: 0.5}`` in its recipe."""

    method: str = "sbi"
    """How pseudo-fakes are made: ``sbi`` (self-blended images), ``av_shift`` (the voice moved
    against the mouth: only for specialists that read the sync curves) or ``sbi+av_shift`` (each
    pseudo-fake one of them, at random)."""
    ratio: float = 0.5
    """Share of each training batch's fake rows replaced by pseudo-fakes of the batch's real rows
    (the real rows stay): 0.5 trains on as many pseudo-fakes as dataset fakes, 1.0 on pseudo-fakes
    only, as SBI itself does. Batch size and class balance stay those of the stream."""
    margin: float = CROP_MARGIN
    """The shards' crop margin (``prepare``'s ``ClipConfig.margin``), which places the face box in a crop."""

    def __post_init__(self) -> None:
        if not self.kinds or any(k not in METHODS for k in self.kinds):
            raise ValueError(f"pseudo_fakes.method {self.method!r} is not one of {list(METHODS)} "
                             f"or several joined by '+'")
        if not 0 < self.ratio <= 1:
            raise ValueError(f"pseudo_fakes.ratio must be in (0, 1], got {self.ratio}")
        if self.margin < 0:
            raise ValueError(f"pseudo_fakes.margin must be >= 0, got {self.margin}")

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(k.strip() for k in self.method.split("+") if k.strip())

    def for_model(self, uses_sync: bool) -> "PseudoFakes | None":
        """The pseudo-fakes a specialist can learn from: ``av_shift`` only for one that reads the
        sync curves (for the others its rows would be real clips labelled fake); ``None``: none."""
        kinds = [k for k in self.kinds if k != "av_shift" or uses_sync]
        return replace(self, method="+".join(kinds)) if kinds else None


@dataclass(frozen=True)
class FaceGeometry:
    """Where the face is in an image: centre and half-size in pixels."""

    cx: float
    cy: float
    half: float


@dataclass(frozen=True)
class BlendDraw:
    """The random choices of one pseudo-fake, in face-relative units: one per clip, shared by all
    its frames and its grid patch. Ranges follow SBI's (colour: RGB shift, saturation, brightness,
    contrast; frequency: down-up scaling or sharpening; a small shift and rescale; a blurred mask
    with a random blend ratio)."""

    mask_axes: tuple[float, float]
    """Ellipse semi-axes (x, y) in face half-sizes."""
    mask_offset: tuple[float, float]
    """Ellipse centre offset in face half-sizes."""
    mask_blur: float
    """Gaussian blur sigma of the mask in face half-sizes."""
    blend: float
    """Peak opacity of the altered copy (SBI draws it from 0.25, 0.5, 0.75, 1, 1, 1)."""
    rgb_shift: tuple[float, float, float]
    """Added to each channel, on the [0, 1] scale."""
    contrast: float
    brightness: float
    saturation: float
    frequency: str
    """``down`` (downscale and back), ``sharpen`` or ``none``."""
    frequency_amount: float
    """``down``: the scale factor (<1); ``sharpen``: the unsharp-mask amount."""
    shift: tuple[float, float]
    """Translation of the altered copy in face half-sizes."""
    scale: float
    """Rescale of the altered copy about the face centre."""


def draw_blend(rng: np.random.Generator) -> BlendDraw:
    """One pseudo-fake's random choices."""
    u = rng.uniform
    frequency = str(rng.choice(["down", "sharpen", "none"]))
    amount = float(u(0.4, 0.75)) if frequency == "down" else float(u(0.3, 1.0)) if frequency == "sharpen" else 0.0
    return BlendDraw(
        mask_axes=(float(u(0.70, 0.95)), float(u(0.85, 1.10))),
        mask_offset=(float(u(-0.06, 0.06)), float(u(-0.04, 0.08))),
        mask_blur=float(u(0.06, 0.20)),
        blend=float(rng.choice([0.25, 0.5, 0.75, 1.0, 1.0, 1.0])),
        rgb_shift=tuple(float(v) for v in u(-20 / 255, 20 / 255, 3)),
        contrast=float(u(0.9, 1.1)),
        brightness=float(u(-0.1, 0.1)),
        saturation=float(u(0.8, 1.2)),
        frequency=frequency,
        frequency_amount=amount,
        shift=(float(u(-0.06, 0.06)), float(u(-0.06, 0.06))),
        scale=float(u(0.95, 1.05)),
    )


def crop_geometry(size: int, margin: float = CROP_MARGIN) -> FaceGeometry:
    """The face in an ``S x S`` margin crop: centred, its box ``S / (1 + 2 margin)`` wide."""
    return FaceGeometry(size / 2, size / 2, size / (2 * (1 + 2 * margin)))


def grid_geometry(face_box: np.ndarray, grid_size: int, margin: float = CROP_MARGIN) -> FaceGeometry:
    """The face in a clip's codec-grid patch, from the crop's square ``face_box`` (frame pixels).

    The patch's corner is where :func:`~data_pipeline.grid.grid_origin` put it for a face away from
    the frame's right and bottom edges (the frame size is not stored with the row); near those
    edges the mask lands up to a patch-fraction off, which a pseudo-fake tolerates.
    """
    x0, y0, x1, y1 = (float(v) for v in face_box)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    ox = max(round((cx - grid_size / 2) / GRID_ALIGN) * GRID_ALIGN, 0)
    oy = max(round((cy - grid_size / 2) / GRID_ALIGN) * GRID_ALIGN, 0)
    return FaceGeometry(cx - ox, cy - oy, (x1 - x0) / (2 * (1 + 2 * margin)))


def blend_mask(shape: tuple[int, int], draw: BlendDraw, geom: FaceGeometry) -> np.ndarray:
    """The ``(H, W)`` float32 blending weights: a filled ellipse over the face, Gaussian-blurred
    with a finite kernel (so it is exactly 0 a few sigmas away), times the draw's opacity."""
    h, w = shape
    # drawn at 4x sub-pixel precision: small crops (64 px) still get a smooth ellipse
    centre = (round((geom.cx + draw.mask_offset[0] * geom.half) * 4), round((geom.cy + draw.mask_offset[1] * geom.half) * 4))
    axes = (max(1, round(draw.mask_axes[0] * geom.half * 4)), max(1, round(draw.mask_axes[1] * geom.half * 4)))
    hard = np.zeros((h, w), np.uint8)
    cv2.ellipse(hard, centre, axes, 0, 0, 360, 255, thickness=-1, lineType=cv2.LINE_AA, shift=2)
    mask = hard.astype(np.float32) / 255.0
    sigma = max(0.5, draw.mask_blur * geom.half)
    k = 2 * math.ceil(3 * sigma) + 1
    mask = cv2.GaussianBlur(mask, (k, k), sigma, borderType=cv2.BORDER_CONSTANT)
    mask[mask < 1e-3] = 0.0  # the kernel's far tail: a quarter of a grey level at most
    return mask * draw.blend


def _altered_copy(image: np.ndarray, draw: BlendDraw, geom: FaceGeometry) -> np.ndarray:
    """The source copy of one ``(H, W, 3)`` uint8 image: colour, frequency, then shift and scale."""
    h, w = image.shape[:2]
    x = image.astype(np.float32) / 255.0
    grey = x.mean(axis=2, keepdims=True)
    x = grey + (x - grey) * draw.saturation
    x = (x - 0.5) * draw.contrast + 0.5 + draw.brightness + np.asarray(draw.rgb_shift, np.float32)
    x = np.clip(x, 0.0, 1.0)
    if draw.frequency == "down":
        small = cv2.resize(x, (max(2, round(w * draw.frequency_amount)), max(2, round(h * draw.frequency_amount))),
                           interpolation=cv2.INTER_AREA)
        x = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    elif draw.frequency == "sharpen":
        x = np.clip(x + draw.frequency_amount * (x - cv2.GaussianBlur(x, (0, 0), 1.0)), 0.0, 1.0)
    m = cv2.getRotationMatrix2D((geom.cx, geom.cy), 0.0, draw.scale)
    m[:, 2] += (draw.shift[0] * geom.half, draw.shift[1] * geom.half)
    return cv2.warpAffine(x, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def self_blend(images: np.ndarray, draw: BlendDraw, geom: FaceGeometry) -> tuple[np.ndarray, np.ndarray]:
    """Blend each ``(H, W, 3)`` uint8 image of ``images`` (``(N, H, W, 3)``: a clip's frames) with
    its altered copy through one mask. Returns ``(pseudo-fake uint8 (N, H, W, 3), mask (H, W))``;
    pixels where the mask is 0 are the input's, exactly. ``images`` is not modified."""
    images = np.asarray(images)
    mask = blend_mask(images.shape[1:3], draw, geom)
    out = images.copy()
    inside = mask > 0
    if not inside.any():
        return out, mask
    m = mask[..., None]
    for i, image in enumerate(images):
        mixed = _altered_copy(image, draw, geom) * m + (image.astype(np.float32) / 255.0) * (1 - m)
        out[i][inside] = np.clip(mixed * 255.0 + 0.5, 0, 255).astype(np.uint8)[inside]
    return out, mask


def pseudo_fake_row(row: dict, draw: BlendDraw, margin: float = CROP_MARGIN) -> dict:
    """A pseudo-fake clip row from a real one (a mapping of its columns): ``frames`` and ``grid``
    blended with the same draw, ``label`` 1, ``method`` :data:`PSEUDO_METHOD`; other columns copied."""
    t, s = int(row["num_frames"]), int(row["size"])
    frames = np.frombuffer(row["frames"], np.uint8).reshape(t, s, s, 3)
    out = dict(row)
    out["frames"] = self_blend(frames, draw, crop_geometry(s, margin))[0].tobytes()
    g = int(row.get("grid_size", 0) or 0)
    if g:
        patch = np.frombuffer(row["grid"], np.uint8).reshape(1, g, g, 3)
        out["grid"] = self_blend(patch, draw, grid_geometry(np.asarray(row["face_box"]), g, margin))[0][0].tobytes()
    out["label"] = 1
    if "method" in out:
        out["method"] = PSEUDO_METHOD["sbi"]
    return out


def has_sync(row: dict) -> bool:
    """Whether a clip row carries sync curves."""
    return _is_sync_shape(row.get("sync_shape"))


def _is_sync_shape(shape) -> bool:
    return shape is not None and len(shape) == 2 and int(shape[0]) * int(shape[1]) > 0


def av_shifted_row(row: dict, steps: int) -> dict:
    """An ``av_shift`` pseudo-fake of a real clip row with sync curves: the curves moved ``steps``
    offset steps (the voice ``steps / 25`` s later when positive), ``label`` 1; the rest copied."""
    shape = tuple(int(v) for v in row["sync_shape"])
    curves = np.frombuffer(row["sync"], np.float32).reshape(shape)
    out = dict(row)
    out["sync"] = np.ascontiguousarray(np.roll(curves, steps, axis=1)).tobytes()
    out["label"] = 1
    if "method" in out:
        out["method"] = PSEUDO_METHOD["av_shift"]
    return out


def draw_av_shift(rng: np.random.Generator) -> int:
    """Offset steps of one ``av_shift`` pseudo-fake, either way."""
    return int(rng.integers(AV_SHIFT_STEPS[0], AV_SHIFT_STEPS[1] + 1)) * int(rng.choice([-1, 1]))


def replace_fakes_with_pseudo_fakes(batch: dict[str, np.ndarray], cfg: PseudoFakes,
                                    rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Replace ``round(ratio x fakes)`` of a batch's fake rows (chosen at random) by pseudo-fakes of
    as many of its real rows (chosen at random, with replacement when fakes outnumber reals), each
    made with one of ``cfg``'s methods drawn at random among those the real row allows
    (``av_shift`` needs sync curves; with ``av_shift`` alone, only real rows with curves are used).

    ``batch`` holds NumPy columns of clip rows (as Ray Data hands them to a collate function);
    the result has the same columns and length. A batch without real or fake rows is returned as
    it is. The same ``rng`` state gives the same result.
    """
    labels = np.asarray(batch["label"])
    real, fake = np.flatnonzero(labels == 0), np.flatnonzero(labels == 1)
    kinds = cfg.kinds
    if kinds == ("av_shift",) and len(real):
        shapes = batch.get("sync_shape")
        real = real[[shapes is not None and _is_sync_shape(shapes[i]) for i in real]]
    k = int(round(cfg.ratio * len(fake)))
    if k == 0 or len(real) == 0:
        return batch
    slots = np.sort(rng.choice(fake, size=k, replace=False))
    sources = rng.choice(real, size=k, replace=k > len(real))
    out = {name: np.array(col, copy=True) for name, col in batch.items()}
    for slot, src in zip(slots, sources):
        row = {name: col[src] for name, col in batch.items()}
        usable = [kind for kind in kinds if kind != "av_shift" or has_sync(row)]
        kind = usable[0] if len(usable) == 1 else str(rng.choice(usable))
        if kind == "av_shift":
            row = av_shifted_row(row, draw_av_shift(rng))
        else:
            row = pseudo_fake_row(row, draw_blend(rng), cfg.margin)
        for name, value in row.items():
            out[name][slot] = value
    return out
