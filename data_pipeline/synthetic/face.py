"""The face of one identity, rendered once per video in canonical pose, part by part (skin, neck and
clothes, ears, hair, eyes and brows, nostrils), and the mouth drawn per frame."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .scenes import Identity, Scene, _smooth_noise


@dataclass
class _Canvas:
    """A face rendered once per video in canonical pose on an oversized canvas."""

    rgb: np.ndarray  # (Hc, Wc, 3) uint8, no mouth
    alpha: np.ndarray  # (Hc, Wc) uint8: person (face, hair, neck, clothes)
    face: np.ndarray  # (Hc, Wc) uint8: face skin region (for manipulations)
    cx: float
    cy: float
    a: float  # face half-width (px)
    b: float  # face half-height (px)
    shade_mouth: float  # light level at the mouth (for drawing lips)


def _gauss(x: np.ndarray, y: np.ndarray, cx: float, cy: float, sx: float, sy: float) -> np.ndarray:
    return np.exp(-(((x - cx) / sx) ** 2 + ((y - cy) / sy) ** 2))


def _smoothstep(d: np.ndarray, width: float) -> np.ndarray:
    """0 outside (d < 0) to 1 inside (d > width), smooth in between."""
    t = np.clip(d / max(width, 1e-6), 0.0, 1.0)
    return t * t * (3 - 2 * t)


@dataclass
class _Grid:
    """Canvas coordinates and the face's light, shared by the face parts."""

    hc: int  # canvas height (px)
    wc: int  # canvas width (px)
    cx: float  # face centre (px)
    cy: float
    a: float  # face half-width (px)
    b: float  # face half-height (px)
    xs: np.ndarray  # (Hc, Wc) float32 pixel columns
    ys: np.ndarray  # (Hc, Wc) float32 pixel rows
    X: np.ndarray  # x in face half-widths from the face centre
    Y: np.ndarray  # y in face half-heights from the face centre
    px: float  # one pixel in face units (x)
    L: np.ndarray  # unit light direction (float32)
    tint: np.ndarray  # light colour (float32 RGB)
    amb: float  # ambient light level
    gain: float  # the scene's light gain


def _grid(ident: Identity, scene: Scene, light: tuple[float, float, float] | None,
          tint: tuple[float, float, float] | None) -> _Grid:
    """The oversized canvas of ``ident``'s face in ``scene`` and the light it is rendered under."""
    H, W = scene.height, scene.width
    hc, wc = int(H * 1.3) // 2 * 2, int((scene.person_width or W) * 1.3) // 2 * 2
    b = ident.face_b * H
    a = b / ident.aspect
    cx, cy = wc / 2.0, hc * 0.45
    ys, xs = np.mgrid[0:hc, 0:wc].astype(np.float32)
    L = np.array(light if light is not None else scene.light_dir, np.float32)
    L = L / np.linalg.norm(L)
    tint_arr = np.array(tint if tint is not None else scene.light_tint, np.float32)
    return _Grid(hc=hc, wc=wc, cx=cx, cy=cy, a=a, b=b, xs=xs, ys=ys, X=(xs - cx) / a, Y=(ys - cy) / b,
                 px=1.0 / a, L=L, tint=tint_arr, amb=scene.ambient, gain=scene.light_gain)


def _relief(ident: Identity, g: _Grid) -> np.ndarray:
    """Relief: eye sockets and brow band darker; nose bridge, cheeks, forehead brighter."""
    X, L = g.X, g.L
    ex, ey = ident.eye_dx, ident.eye_y * ident.aspect  # eye centre in face-x units
    Ya = g.Y * ident.aspect  # y in face-x units (isotropic)
    relief = np.ones_like(X)
    for s in (-1.0, 1.0):
        relief -= 0.5 * _gauss(X, Ya, s * ex, ey - 0.03, ident.eye_w * 1.7, ident.eye_h * 3.0)
        relief += 0.14 * _gauss(X, Ya, s * 0.45, ey + 0.45, 0.22, 0.18)  # cheek
    nose_top, nose_tip = ey, ident.nose_len * ident.aspect
    along = np.clip((Ya - nose_top) / max(nose_tip - nose_top, 1e-3), 0, 1)
    bridge = np.exp(-((X - 0.0) / 0.07) ** 2) * (Ya > nose_top - 0.1) * (Ya < nose_tip + 0.05)
    relief += 0.22 * bridge * (0.6 + 0.4 * along)
    side = -1.0 if L[0] > 0 else 1.0  # nose casts its shadow away from the light
    relief -= 0.18 * np.exp(-((X - side * ident.nose_w * 0.9) / 0.06) ** 2) * (Ya > nose_top + 0.1) * (Ya < nose_tip)
    relief -= 0.25 * _gauss(X, Ya, 0.0, nose_tip + 0.07, ident.nose_w, 0.05)  # under the nose
    relief += 0.10 * _gauss(X, Ya, 0.0, -0.85 * ident.aspect, 0.5, 0.25)  # forehead
    relief -= 0.10 * _gauss(X, Ya, 0.0, ident.mouth_y * ident.aspect + 0.25, 0.3, 0.08)  # chin crease
    return relief


def _skin(ident: Identity, g: _Grid, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The face's skin: ``(coverage, colour, shade)``, a Lambertian head with relief and pores."""
    X, Y, L, amb = g.X, g.Y, g.L, g.amb
    # face shape: an ellipse narrowed towards the chin
    narrow = 1.0 - ident.jaw * np.clip(Y, 0, 1) ** 2
    Xw = X / narrow
    r2 = Xw**2 + Y**2
    face_in = _smoothstep(1.0 - np.sqrt(r2), 1.5 * g.px)

    nz = np.sqrt(np.clip(1.0 - r2, 0.0, 1.0))
    nx, ny = Xw * 0.9, Y * 0.9
    nn = np.sqrt(nx**2 + ny**2 + nz**2) + 1e-6
    lambert = np.clip((nx * L[0] + ny * L[1] + nz * L[2]) / nn, 0, 1)
    shade = amb + (1 - amb) * 1.25 * lambert

    relief = _relief(ident, g)
    pores = cv2.resize(rng.standard_normal((g.hc // 2, g.wc // 2)).astype(np.float32), (g.wc, g.hc))
    skin_tex = 1.0 + 0.045 * pores + 0.03 * _smooth_noise(rng, g.hc, g.wc, 0.7)
    skin = np.array(ident.skin, np.float32) * g.tint
    face_rgb = (skin[None, None, :] * (shade * relief * skin_tex)[..., None]) * g.gain
    return face_in, face_rgb, shade


def _neck(ident: Identity, g: _Grid) -> tuple[np.ndarray, np.ndarray]:
    """The neck (behind the face): ``(coverage, colour)``, plain skin."""
    X, Y, L, amb = g.X, g.Y, g.L, g.amb
    neck_in = _smoothstep(0.62 - np.abs(X), 2 * g.px) * (Y > 0.4)
    neck_shade = np.clip(0.55 + 0.25 * np.clip(Y - 0.9, 0, 1), 0, 1) * (amb + (1 - amb) * L[2])
    skin = np.array(ident.skin, np.float32) * g.tint
    skin_plain = skin[None, None, :] * g.gain
    return neck_in, skin_plain * neck_shade[..., None]


def _clothes(ident: Identity, g: _Grid) -> tuple[np.ndarray, np.ndarray]:
    """The clothes (the back layer): ``(coverage, colour)``."""
    X, Y = g.X, g.Y
    clothes_r = ((X / 2.6) ** 2 + ((Y - 1.95) / 0.8) ** 2)
    clothes_in = _smoothstep(1 - np.sqrt(clothes_r), 0.02)
    clothes_rgb = np.array(ident.clothes, np.float32) * g.tint * (0.6 + 0.4 * np.clip(1 - np.abs(X) / 3, 0, 1))[..., None]
    return clothes_in, clothes_rgb


def _ears(g: _Grid) -> np.ndarray:
    """Coverage of the two ears (coloured like the shaded face, a little darker)."""
    X, Y = g.X, g.Y
    ear_in = np.zeros_like(X)
    for s in (-1.0, 1.0):
        ear_in = np.maximum(ear_in, _smoothstep(1 - np.sqrt(((X - s * 0.98) / 0.14) ** 2 + ((Y + 0.05) / 0.2) ** 2), 0.1))
    return ear_in


def _hair(ident: Identity, g: _Grid, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Hair: a cap above the hairline and, by style, at the sides: ``(coverage, colour)``."""
    X, Y, L, amb = g.X, g.Y, g.L, g.amb
    head_r = np.sqrt((X / 1.13) ** 2 + ((Y + 0.12) / 1.08) ** 2)
    head_in = _smoothstep(1 - head_r, 1.5 * g.px)
    hairline = ident.hairline + 0.22 * X**2
    if ident.hair_style == 2:  # fringe: lower hairline
        hairline = hairline + 0.1
    if ident.hair_style == 3:  # receding: high hairline
        hairline = hairline - 0.15
    top = _smoothstep(hairline - Y, 0.04)
    sides = _smoothstep(np.abs(X) - 0.93, 0.04) * (Y < 0.05)
    hair_mask = head_in * np.maximum(top, sides)
    if ident.hair_style == 1:  # long hair falls behind the shoulders
        long_in = _smoothstep(1 - np.sqrt((X / 1.35) ** 2 + ((Y - 0.4) / 1.5) ** 2), 0.03) * (Y > -0.2)
        long_in = long_in * _smoothstep(np.abs(X) - 0.75, 0.05)
        hair_mask = np.maximum(hair_mask, long_in)
    hair_tex = 1.0 + 0.12 * _smooth_noise(rng, g.hc, g.wc, 0.8) * (np.sin(g.xs * 1.7 + g.ys * 0.3) * 0.5 + 0.5)
    hair_shade = amb + (1 - amb) * np.clip((X * 0.5 * L[0] + (Y + 0.5) * 0.5 * L[1] + 0.8 * L[2]), 0, 1)
    hair_rgb = np.array(ident.hair, np.float32) * g.tint * (hair_shade * hair_tex)[..., None] * g.gain
    return hair_mask, hair_rgb


def _composite(back: tuple[np.ndarray, np.ndarray],
               layers: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Paint ``(coverage, colour)`` layers back to front over the ``back`` one: ``(rgb, alpha)``."""
    back_in, back_rgb = back
    rgb = back_rgb * back_in[..., None]
    alpha = back_in.copy()
    for m, col in layers:
        rgb = rgb * (1 - m[..., None]) + col * m[..., None]
        alpha = np.maximum(alpha, m)
    return rgb, alpha


def _pt(g: _Grid, fx: float, fy: float) -> tuple[int, int]:
    """A point in face units as canvas pixels with 4 fractional bits (OpenCV's ``shift=4``)."""
    return int(round((g.cx + fx * g.a) * 16)), int(round((g.cy + fy * g.b) * 16))


def _size(g: _Grid, rx: float, ry: float) -> tuple[int, int]:
    """Ellipse half-axes in face half-widths as pixels with 4 fractional bits (at least 1)."""
    return max(1, int(round(rx * g.a * 16))), max(1, int(round(ry * g.a * 16)))


def _draw_eyes(img: np.ndarray, ident: Identity, g: _Grid, eye_shade: float) -> None:
    """Draw both eyes (sclera, iris, pupil, lash line) and eyebrows onto the canvas image."""
    ex = ident.eye_dx
    # sclera in the eye's shadow: never much brighter than the skin (at low resolution real eyes
    # read as dark blobs, which is what face detectors key on)
    sclera = np.minimum(np.array([0.80, 0.77, 0.74]), np.array(ident.skin) * 1.15 + 0.08)
    white = tuple(int(v) for v in np.clip(sclera * 255 * g.tint * eye_shade * 0.85, 0, 255))
    iris = tuple(int(v) for v in np.clip(np.array(ident.iris) * 255 * eye_shade, 0, 255))
    brow_base = np.minimum(np.array(ident.hair), np.array(ident.skin) * 0.45)
    brow_col = tuple(int(v) for v in np.clip(brow_base * 255 * eye_shade, 0, 255))
    lash = (25, 18, 15)
    for s in (-1.0, 1.0):
        ecx, ecy = _pt(g, s * ex, ident.eye_y)
        cv2.ellipse(img, (ecx, ecy), _size(g, ident.eye_w, ident.eye_h), 0, 0, 360, white, -1, cv2.LINE_AA, 4)
        cv2.ellipse(img, (ecx, ecy), _size(g, ident.eye_h * 1.5, ident.eye_h), 0, 0, 360, iris, -1, cv2.LINE_AA, 4)
        cv2.circle(img, (ecx, ecy), _size(g, ident.eye_h * 0.45, 0)[0], (10, 8, 8), -1, cv2.LINE_AA, 4)
        cv2.ellipse(img, (ecx, ecy), _size(g, ident.eye_w, ident.eye_h * 1.05), 0, 180, 360, lash,
                    max(1, int(round(g.a * 0.07))), cv2.LINE_AA, 4)
        bcx, bcy = _pt(g, s * (ex + 0.02), ident.eye_y - ident.brow_gap / ident.aspect)
        cv2.ellipse(img, (bcx, bcy), _size(g, ident.eye_w * 1.35, ident.brow_thick * 2.2), s * ident.brow_tilt, 200, 340,
                    brow_col, max(1, int(round(ident.brow_thick * g.a))), cv2.LINE_AA, 4)


def _draw_nostrils(img: np.ndarray, ident: Identity, g: _Grid, eye_shade: float) -> None:
    """Draw the two nostrils (dark skin) onto the canvas image."""
    for s in (-1.0, 1.0):
        ncx, ncy = _pt(g, s * ident.nose_w * 0.55, ident.nose_len)
        cv2.ellipse(img, (ncx, ncy), _size(g, ident.nose_w * 0.35, ident.nose_w * 0.18), 0, 0, 360,
                    tuple(int(v) for v in np.array(ident.skin) * 255 * 0.35 * eye_shade), -1, cv2.LINE_AA, 4)


def _render_canvas(ident: Identity, scene: Scene, light: tuple[float, float, float] | None = None,
                   tint: tuple[float, float, float] | None = None) -> _Canvas:
    """Render ``ident`` under ``scene``'s light (or ``light``/``tint`` overrides) in canonical pose."""
    g = _grid(ident, scene, light, tint)
    # one generator for the skin's then the hair's texture: keep that draw order
    rng = np.random.default_rng(scene.seed + 7)
    face_in, face_rgb, shade = _skin(ident, g, rng)
    hair_mask, hair_rgb = _hair(ident, g, rng)
    # composite back to front: clothes, neck, ears, face, hair
    rgb, alpha = _composite(_clothes(ident, g), [_neck(ident, g), (_ears(g), face_rgb * 0.85),
                                                 (face_in, face_rgb), (hair_mask, hair_rgb)])
    face_region = face_in * (1 - hair_mask)

    img = np.clip(rgb * 255.0, 0, 255).astype(np.uint8)

    # crisp features drawn in pixels
    eye_shade = float(np.clip(g.amb + (1 - g.amb) * g.L[2], 0, 1)) * scene.light_gain
    _draw_eyes(img, ident, g, eye_shade)
    _draw_nostrils(img, ident, g, eye_shade)

    mouth_shade = float(shade[int(g.cy + ident.mouth_y * g.b), int(g.cx)])
    return _Canvas(
        rgb=img,
        alpha=np.clip(alpha * 255, 0, 255).astype(np.uint8),
        face=np.clip(face_region * 255, 0, 255).astype(np.uint8),
        cx=g.cx,
        cy=g.cy,
        a=g.a,
        b=g.b,
        shade_mouth=mouth_shade * scene.light_gain,
    )


def _draw_mouth(img: np.ndarray, ident: Identity, cv: _Canvas, opening: float, tint: np.ndarray) -> None:
    """Draw lips and the (dark) mouth interior, ``opening`` in [0, 1], onto a canvas copy."""
    a, b = cv.a, cv.b
    mx, my = cv.cx, cv.cy + ident.mouth_y * b
    shade = cv.shade_mouth
    lip = tuple(int(v) for v in np.clip(np.array(ident.lip) * 255 * tint * shade, 0, 255))
    dark = tuple(int(v) for v in np.clip(np.array([0.18, 0.05, 0.05]) * 255 * shade, 0, 255))
    teeth = tuple(int(v) for v in np.clip(np.array([0.85, 0.82, 0.75]) * 255 * tint * shade, 0, 255))
    mw = ident.mouth_w * a
    open_h = 0.02 * a + 0.24 * a * opening
    c = (int(round(mx * 16)), int(round(my * 16)))
    cv2.ellipse(img, c, (int(mw * 16), int((open_h + 0.09 * a) * 16)), 0, 0, 360, lip, -1, cv2.LINE_AA, 4)
    cv2.ellipse(img, c, (int(mw * 0.82 * 16), max(8, int(open_h * 16))), 0, 0, 360, dark, -1, cv2.LINE_AA, 4)
    if opening > 0.3:
        cv2.ellipse(img, (c[0], c[1] - int(open_h * 0.55 * 16)), (int(mw * 0.6 * 16), int(open_h * 0.35 * 16)),
                    0, 0, 360, teeth, -1, cv2.LINE_AA, 4)
