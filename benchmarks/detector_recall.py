"""Face detectors compared: recall at IoU >= 0.5 and milliseconds per frame, on the same videos.

    python benchmarks/detector_recall.py [--detectors haar,mtcnn] [--heights 720,1080]
                                         [--seconds 3 --fps 10] [--synthetic DIR]

1. A real face (``tests/real_face.py``: matplotlib's portrait moving and growing over a textured
   background, its annotated face box carried through each frame's affine) at every ``--heights``
   (16:9), in variants: ``moving`` (upright), ``rotated +25`` / ``rotated -25`` (in-plane),
   ``squeezed 0.6`` (a horizontal squeeze, like a head turned away), ``dark 0.3`` (a dark capture)
   and ``small face`` (its box 12-16% of the frame height: a face far from the camera).
2. ``--synthetic DIR``: the synthetic benchmark (every ``synthetic_truth.json`` under DIR), by
   family; every person's face counts (``"faces"``; else the main face, ``"boxes"``). Videos whose
   truth has no per-frame face boxes are skipped (and counted).

Every frame is decoded (PyAV, RGB, as ``read_frames``) and given to each detector's ``detect``
(full-frame search on its downscaled copy; no tracking). A face is found when a detection's IoU
with the truth is >= 0.5; recall = found / faces. ms/frame times ``detect`` alone (downscale
included), single process, after one warm-up call.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from data_pipeline.faces import Box, FaceDetector, available_detectors, create_detector  # noqa: E402
from data_pipeline.video import VideoError, read_frames  # noqa: E402
from tests.real_face import Motion, make_real_face_video  # noqa: E402

#: the real-photo variants: name -> changes to the plain moving photo
VARIANTS: dict[str, dict] = {
    "moving": {},
    "rotated +25": {"rotation": (25.0, 25.0)},
    "rotated -25": {"rotation": (-25.0, -25.0)},
    "squeezed 0.6": {"squeeze": 0.6},
    "dark 0.3": {"exposure": 0.3},
    "small face": {"face_height": (0.12, 0.16)},
}


@dataclass
class Score:
    """Running recall and detection time of one detector on one set of videos."""

    faces: int = 0
    found: int = 0
    frames: int = 0
    seconds: float = 0.0

    @property
    def recall(self) -> float:
        return self.found / self.faces if self.faces else float("nan")

    @property
    def ms_per_frame(self) -> float:
        return 1000.0 * self.seconds / self.frames if self.frames else float("nan")


def score_frames(detector: FaceDetector, frames: Iterable, truths: Sequence[Sequence[Box]], score: Score) -> None:
    """Detect on every frame and add its faces (found at IoU >= 0.5) and time to ``score``."""
    for frame, faces in zip(frames, truths):
        t0 = time.perf_counter()
        boxes = detector.detect(frame)
        score.seconds += time.perf_counter() - t0
        score.frames += 1
        score.faces += len(faces)
        score.found += sum(any(b.iou(face) >= 0.5 for b in boxes) for face in faces)


def real_photo_rows(detectors: dict[str, FaceDetector], heights: list[int], seconds: float, fps: float,
                    work: Path) -> list[tuple[str, str, dict[str, Score]]]:
    """``(variant, resolution, {detector: score})`` for every variant at every height."""
    rows = []
    for height in heights:
        width = round(height * 16 / 9 / 2) * 2
        for name, change in VARIANTS.items():
            motion = replace(Motion(width=width, height=height, fps=fps, seconds=seconds), **change)
            video = make_real_face_video(work / f"{height}-{name.replace(' ', '_')}.mp4", motion)
            frames = read_frames(video.path)
            scores = {d: Score() for d in detectors}
            for d, detector in detectors.items():
                score_frames(detector, frames, [[b] for b in video.boxes], scores[d])
            rows.append((name, f"{width}x{height}", scores))
            del frames
    return rows


def truth_faces(entry: dict) -> list[list[Box]] | None:
    """Per-frame face boxes of a synthetic truth entry, or ``None`` when it has none. Read from
    ``"faces"``: one ``{"boxes": [per-frame box or null]}`` per person (every face of the video),
    or from ``"boxes"`` (the main face): one ``[x0, y0, x1, y1]`` (or a list of them) per frame."""
    faces = entry.get("faces")
    if faces and isinstance(faces[0], dict):
        tracks = [f.get("boxes") or [] for f in faces]
        n = max(len(t) for t in tracks)
        return [[Box(*map(float, t[i][:4])) for t in tracks if i < len(t) and t[i]] for i in range(n)]
    per_frame = faces or entry.get("boxes")
    if not per_frame:
        return None
    out = []
    for item in per_frame:
        if not item:
            out.append([])
        elif isinstance(item[0], (int, float)):
            out.append([Box(*map(float, item[:4]))])
        else:
            out.append([Box(*map(float, b[:4])) for b in item if b])
    return out


def synthetic_rows(detectors: dict[str, FaceDetector], root: Path, max_videos: int
                   ) -> list[tuple[str, str, dict[str, Score]]]:
    """``(family, "<n> videos", {detector: score})`` over the synthetic benchmark under ``root``."""
    groups: dict[str, dict[str, Score]] = {}
    counts: dict[str, int] = {}
    skipped = 0
    for truth_file in sorted(root.rglob("synthetic_truth.json")):
        used = 0
        for vid, entry in sorted(json.loads(truth_file.read_text()).items()):
            faces = truth_faces(entry)
            if faces is None or used >= max_videos:
                skipped += faces is None
                continue
            try:
                frames = read_frames(truth_file.parent / vid)
            except VideoError as exc:
                print(f"  skipped {vid}: {exc}")
                continue
            used += 1
            family = str(entry.get("family", "?"))
            counts[family] = counts.get(family, 0) + 1
            scores = groups.setdefault(family, {d: Score() for d in detectors})
            for d, detector in detectors.items():
                score_frames(detector, frames, faces, scores[d])
    if skipped:
        print(f"synthetic: {skipped} video(s) without per-frame face boxes in their truth were skipped")
    return [(fam, f"{counts[fam]} videos", scores) for fam, scores in sorted(groups.items())]


def print_table(title: str, rows: list[tuple[str, str, dict[str, Score]]], names: list[str]) -> None:
    head = f"{'video':22s} {'size':11s} " + " ".join(f"{n + ' recall':>14s} {n + ' ms/fr':>12s}" for n in names)
    print(f"\n{title}\n{head}")
    totals = {n: Score() for n in names}
    for a, b, scores in rows:
        cells = " ".join(f"{scores[n].recall:14.3f} {scores[n].ms_per_frame:12.1f}" for n in names)
        print(f"{a:22s} {b:11s} {cells}  ({scores[names[0]].faces} faces)")
        for n in names:
            t = totals[n]
            t.faces, t.found = t.faces + scores[n].faces, t.found + scores[n].found
            t.frames, t.seconds = t.frames + scores[n].frames, t.seconds + scores[n].seconds
    cells = " ".join(f"{totals[n].recall:14.3f} {totals[n].ms_per_frame:12.1f}" for n in names)
    print(f"{'all':22s} {'':11s} {cells}  ({totals[names[0]].faces} faces)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--detectors", default="haar,mtcnn", help="comma-separated registry names")
    ap.add_argument("--heights", default="720,1080", help="frame heights of the real-photo videos (16:9)")
    ap.add_argument("--seconds", type=float, default=3.0, help="length of each real-photo video")
    ap.add_argument("--fps", type=float, default=10.0, help="frame rate of each real-photo video")
    ap.add_argument("--synthetic", type=Path, help="a synthetic benchmark folder (with synthetic_truth.json files)")
    ap.add_argument("--max-synthetic-videos", type=int, default=40, help="per dataset (truth file)")
    args = ap.parse_args(argv)
    names = [n for n in args.detectors.split(",") if n]
    missing = [n for n in names if n not in available_detectors()]
    if missing:
        print(f"not installed, left out: {', '.join(missing)}")
    names = [n for n in names if n not in missing]
    if not names:
        return 1
    detectors = {n: create_detector(n) for n in names}
    for detector in detectors.values():
        detector.detect(np.zeros((720, 1280, 3), np.uint8))  # warm-up (first-call costs)
    with tempfile.TemporaryDirectory(prefix="detector-recall-") as tmp:
        heights = [int(h) for h in args.heights.split(",") if h]
        rows = real_photo_rows(detectors, heights, args.seconds, args.fps, Path(tmp))
    print_table(f"real photo ({args.seconds:g} s at {args.fps:g} fps per video; IoU >= 0.5)", rows, names)
    if args.synthetic is not None:
        if not any(args.synthetic.rglob("synthetic_truth.json")):
            print(f"\nsynthetic: no synthetic_truth.json under {args.synthetic}; skipped")
        else:
            print_table(f"synthetic benchmark {args.synthetic}", synthetic_rows(detectors, args.synthetic,
                                                                                args.max_synthetic_videos), names)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
