"""Face tracks: every face of a video, followed over its clips.

A video's clips are spread over its length; the detector runs on a few probe frames of each clip
(:func:`probe_indices`). From those detections:

* :func:`consensus_boxes` turns one clip's probe detections into one stable box per face: boxes
  are clustered across the probe frames by IoU and each cluster gives the per-coordinate median of
  its boxes, so the box holds still over the clip's T frames. :func:`consensus_box` keeps the face
  seen most often (then the largest, then the most confident).
* :func:`link_tracks` links the clips' faces into tracks, greedily by centre distance relative to
  the face size (clips are up to a second or more apart, so faces move between them, and the
  people of one video stand side by side, farther apart than a face width).
* :func:`face_tracks` keeps the tracks seen in at least ``min_coverage`` of the clips (one-clip
  detections in a texture are not faces; the most seen face is kept in any case), the ``max_faces`` most seen (ties: larger), in that order
  (the track's *face index*), and lends a clip where a face was not detected the box of that
  face's nearest clip (:func:`fill_missing`).

Nothing here runs a detector: the preparation runs it as a separate (Ray Data actor) stage.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .faces import Box

#: faces one video keeps at most (DFDC videos show one to three people)
DEFAULT_MAX_FACES = 3
#: a track must be seen in this share of a video's clips (at least one clip)
DEFAULT_MIN_COVERAGE = 0.3


def probe_indices(num_frames: int, probes: int) -> list[int]:
    """``probes`` frame indices spread evenly over a clip of ``num_frames`` (ends included)."""
    if num_frames <= 0:
        return []
    probes = max(1, min(probes, num_frames))
    if probes == 1:
        return [num_frames // 2]
    return sorted({round(i * (num_frames - 1) / (probes - 1)) for i in range(probes)})


def _median_box(boxes: Sequence[Box]) -> Box:
    arr = np.array([[b.x0, b.y0, b.x1, b.y1] for b in boxes], dtype=np.float64)
    med = np.median(arr, axis=0)
    return Box(*(float(v) for v in med), score=float(np.mean([b.score for b in boxes])))


def consensus_boxes(detections: Sequence[Sequence[Box]], min_iou: float = 0.3) -> list[tuple[Box, int]]:
    """Every face of per-frame detections as ``(median box, frames seen)``, most seen first (ties:
    larger, then more confident): boxes are clustered across frames by IoU with the cluster's median."""
    clusters: list[list[Box]] = []
    frames_of: list[set[int]] = []
    for f, boxes in enumerate(detections):
        for box in boxes:
            best, best_iou = None, min_iou
            for k, members in enumerate(clusters):
                iou = box.iou(_median_box(members))
                if iou >= best_iou:
                    best, best_iou = k, iou
            if best is None:
                clusters.append([box])
                frames_of.append({f})
            else:
                clusters[best].append(box)
                frames_of[best].add(f)
    order = sorted(
        range(len(clusters)),
        key=lambda i: (len(frames_of[i]), np.median([b.area for b in clusters[i]]), max(b.score for b in clusters[i])),
        reverse=True,
    )
    return [(_median_box(clusters[i]), len(frames_of[i])) for i in order]


def consensus_box(detections: Sequence[Sequence[Box]], min_iou: float = 0.3) -> Box | None:
    """The most seen face of per-frame detections (:func:`consensus_boxes`), or ``None``."""
    found = consensus_boxes(detections, min_iou)
    return found[0][0] if found else None


def fill_missing(boxes: Sequence[Box | None]) -> list[Box | None]:
    """Give each ``None`` the box of the nearest clip (by index, earlier first on ties) that has
    one; all ``None`` stays all ``None``."""
    have = [i for i, b in enumerate(boxes) if b is not None]
    if not have:
        return list(boxes)
    return [b if b is not None else boxes[min(have, key=lambda j: (abs(j - i), j))] for i, b in enumerate(boxes)]


def _distance(a: Box, b: Box) -> float:
    """Centre distance in face sizes; infinite when the sizes differ by more than 2x."""
    sa, sb = max(a.width, a.height, 1e-6), max(b.width, b.height, 1e-6)
    if not 0.5 <= sa / sb <= 2.0:
        return math.inf
    (ax, ay), (bx, by) = a.center, b.center
    return math.hypot(ax - bx, ay - by) / max(sa, sb)


def link_tracks(per_clip: Sequence[Sequence[Box]], max_distance: float = 1.0) -> list[list[Box | None]]:
    """Link each clip's face boxes into tracks (one box or ``None`` per clip), in time order.

    A box joins the track whose last box is nearest (centre distance in face sizes, at most
    ``max_distance``); pairs are taken closest first, one box per track per clip; a box that
    joins no track starts one.
    """
    tracks: list[list[Box | None]] = []
    last: list[Box] = []
    for c, boxes in enumerate(per_clip):
        pairs = sorted(
            (d, t, b) for t, prev in enumerate(last) for b, box in enumerate(boxes)
            if (d := _distance(prev, box)) <= max_distance
        )
        used_t: set[int] = set()
        used_b: set[int] = set()
        for _, t, b in pairs:
            if t in used_t or b in used_b:
                continue
            used_t.add(t)
            used_b.add(b)
            tracks[t].append(boxes[b])
            last[t] = boxes[b]
        for t in range(len(tracks)):
            if t not in used_t:
                tracks[t].append(None)
        for b, box in enumerate(boxes):
            if b not in used_b:
                tracks.append([None] * c + [box])
                last.append(box)
    return tracks


def face_tracks(
    per_clip: Sequence[Sequence[Sequence[Box]]],
    max_faces: int = DEFAULT_MAX_FACES,
    min_coverage: float = DEFAULT_MIN_COVERAGE,
    fill: bool = True,
) -> list[list[Box | None]]:
    """The faces of one video: ``per_clip[c]`` is clip c's per-probe-frame detections.

    Returns up to ``max_faces`` tracks, most seen first (ties: larger), each with one box per clip
    (a clip where the face was not detected borrows its nearest clip's box; ``fill=False`` leaves
    ``None`` there). ``[]``: no face in the video.
    """
    if max_faces < 1:
        raise ValueError(f"max_faces must be >= 1, got {max_faces}")
    faces_per_clip = [[box for box, _ in consensus_boxes(dets)] for dets in per_clip]
    tracks = link_tracks(faces_per_clip)
    need = max(1, math.ceil(min_coverage * len(per_clip)))

    def seen(track: list[Box | None]) -> int:
        return sum(b is not None for b in track)

    def area(track: list[Box | None]) -> float:
        return float(np.median([b.area for b in track if b is not None]))

    ranked = sorted(tracks, key=lambda t: (seen(t), area(t)), reverse=True)
    # the most seen face is kept even when rarer than ``min_coverage`` (a dark or turned face the
    # detector found once is still the video's face); further faces must reach it
    kept = ([t for t in ranked if seen(t) >= need] or ranked[:1])[:max_faces]
    return [fill_missing(t) if fill else t for t in kept]
