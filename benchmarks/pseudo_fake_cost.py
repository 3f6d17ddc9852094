"""What a pseudo-fake costs to make, per clip, and what it looks like, in one run.

    python benchmarks/pseudo_fake_cost.py [--repeats 50] [--figure docs/images/pseudo_fakes.png]

Times :func:`~data_pipeline.pseudo_fakes.pseudo_fake_row` (self-blended: ``sbi``) and
:func:`~data_pipeline.pseudo_fakes.av_shifted_row` (``av_shift``) on clip rows of a real photograph
(matplotlib's ``grace_hopper.jpg``, face box annotated once, as in ``tests/real_face.py``) cut by
the preparation's own crop and codec-grid functions, at the demo's clip format (4 frames of 64 px,
64-px patch) and the default one (4 frames of 224 px, 128-px patch), one thread. With ``--figure``,
writes a PNG of three draws: real crop, mask, pseudo-fake, difference, and the grid patch before
and after.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np

#: the photograph's face, annotated once by eye (tests/real_face.py's PHOTO_FACE_BOX)
PHOTO_FACE_BOX = (172.0, 130.0, 358.0, 325.0)
FORMATS = {"demo (4 x 64 px, 64-px patch)": (64, 64), "default (4 x 224 px, 128-px patch)": (224, 128)}


def photo_row(size: int, grid_size: int, frames: int = 4) -> dict:
    """A real clip row of the photograph: the frames shifted 1 px apart, cropped as ``prepare`` does."""
    from matplotlib import cbook

    from data_pipeline.faces import Box, crop_face
    from data_pipeline.grid import grid_patch

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        photo = cv2.cvtColor(cv2.imdecode(np.frombuffer(f.read(), np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    clip = np.stack([np.roll(photo, i, axis=1) for i in range(frames)])
    box = Box(*PHOTO_FACE_BOX)
    crops, crop_box = crop_face(clip, box, size)
    sync = np.random.default_rng(0).standard_normal((15, 31)).astype(np.float32)
    return {"frames": crops.tobytes(), "num_frames": frames, "size": size, "label": 0, "method": "real",
            "grid": grid_patch(clip[frames // 2], box.as_list(), grid_size).tobytes(), "grid_size": grid_size,
            "face_box": np.asarray(crop_box, np.float32), "sync": sync.tobytes(), "sync_shape": [15, 31]}


def per_clip_ms(fn, repeats: int) -> float:
    fn()
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t) / repeats * 1000


def figure(path: Path, draws: int = 3) -> None:
    from data_pipeline.pseudo_fakes import crop_geometry, draw_blend, grid_geometry, self_blend

    row = photo_row(224, 128)
    frames = np.frombuffer(row["frames"], np.uint8).reshape(4, 224, 224, 3)
    patch = np.frombuffer(row["grid"], np.uint8).reshape(1, 128, 128, 3)
    lines = []
    for seed in range(draws):
        d = draw_blend(np.random.default_rng(seed))
        fake, mask = self_blend(frames, d, crop_geometry(224))
        gfake = self_blend(patch, d, grid_geometry(row["face_box"], 128))[0][0]
        diff = np.clip(np.abs(fake[0].astype(np.int16) - frames[0]) * 4, 0, 255).astype(np.uint8)
        grey = (np.repeat(mask[..., None] / max(mask.max(), 1e-6), 3, axis=2) * 255).astype(np.uint8)
        up = lambda x: cv2.resize(x, (224, 224), interpolation=cv2.INTER_NEAREST)  # noqa: E731
        lines.append(np.concatenate([frames[0], grey, fake[0], diff, up(patch[0]), up(gfake)], axis=1))
    sheet = np.concatenate(lines, axis=0)
    header = np.full((28, sheet.shape[1], 3), 255, np.uint8)
    for i, name in enumerate(["real crop", "mask (x 1/peak)", "pseudo-fake", "|difference| x 4", "grid patch",
                              "grid pseudo-fake"]):
        cv2.putText(header, name, (i * 224 + 6, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(np.concatenate([header, sheet], axis=0), cv2.COLOR_RGB2BGR))
    print(f"wrote {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--figure", help="write the real / mask / pseudo-fake PNG here")
    args = ap.parse_args()

    from data_pipeline.pseudo_fakes import av_shifted_row, draw_av_shift, draw_blend, pseudo_fake_row

    cv2.setNumThreads(1)
    rng = np.random.default_rng(0)
    for name, (size, grid) in FORMATS.items():
        row = photo_row(size, grid)
        sbi = per_clip_ms(lambda row=row: pseudo_fake_row(row, draw_blend(rng)), args.repeats)
        shift = per_clip_ms(lambda row=row: av_shifted_row(row, draw_av_shift(rng)), args.repeats)
        print(f"{name:36s} sbi {sbi:6.2f} ms/clip   av_shift {shift:6.3f} ms/clip")
    if args.figure:
        figure(Path(args.figure))


if __name__ == "__main__":
    main()
