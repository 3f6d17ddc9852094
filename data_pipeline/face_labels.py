"""Which face of a fake was manipulated: compare it with its original inside each face's box.

A fake video of FF++ or DFDC says which real video it was made from (``ManifestRow.original``).
When the fake shows several faces, only some of them may be manipulated (in DFDC, one person of
two). The DFDC winner found manipulated faces from the difference between a fake and its original;
this does the same: each face track's mean absolute grey-level difference to the original, inside
its boxes, on the middle frame of every clip, less the difference outside every face (the noise of
two separate encodes, higher in dark videos). A face is fake when that difference is at least
:data:`MIN_DIFF` and at least :data:`RELATIVE` x the largest face's difference; the unchanged
faces of a fake are labelled **real** (0): their crops are what the original shows, and scoring a
video takes the maximum over its faces, so the video stays fake (:func:`.clips.clip_rows` leaves
them out of training shards, where they would repeat the original's clips).

Faces of a fake are all labelled fake (the video's label) when the fake has one face, has no
known original, the original cannot be read or has another picture size, or no face differs
(each case but the first is reported in the video's notes).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .faces import Box
from .filesystems import FsPath
from .sources.manifest import ManifestRow
from .video import DecodedClips, VideoError, read_frames

#: mean absolute grey-level difference (0-255, above the codec noise) below which a face is unchanged:
#: two x264 encodes of the same frames differ by 1-3 levels; the synthetic families' weakest change
#: is several levels above that
MIN_DIFF = 1.0
#: a face is fake only when it differs at least this share of the most different face
RELATIVE = 0.5


def _grey(frame: np.ndarray) -> np.ndarray:
    return frame.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def box_difference(fake: np.ndarray, original: np.ndarray, box: Box) -> float:
    """Mean absolute grey difference of two RGB frames inside ``box`` (clipped to the frame)."""
    h, w = fake.shape[:2]
    x0, y0 = max(0, int(box.x0)), max(0, int(box.y0))
    x1, y1 = min(w, int(np.ceil(box.x1))), min(h, int(np.ceil(box.y1)))
    if x1 <= x0 or y1 <= y0:
        return 0.0
    return float(np.abs(_grey(fake[y0:y1, x0:x1]) - _grey(original[y0:y1, x0:x1])).mean())


def outside_difference(fake: np.ndarray, original: np.ndarray, boxes: Sequence[Box]) -> float:
    """Mean absolute grey difference outside every box: the codec noise between the two encodes,
    subtracted from each face's difference (0 when the boxes cover the frame)."""
    keep = np.ones(fake.shape[:2], dtype=bool)
    h, w = keep.shape
    for box in boxes:
        keep[max(0, int(box.y0)):min(h, int(np.ceil(box.y1))), max(0, int(box.x0)):min(w, int(np.ceil(box.x1)))] = False
    if not keep.any():
        return 0.0
    return float(np.abs(_grey(fake) - _grey(original))[keep].mean())


def decide(diffs: Sequence[float]) -> list[int] | None:
    """Per-face labels from per-face differences, or ``None`` when no face differs."""
    top = max(diffs, default=0.0)
    if top < MIN_DIFF:
        return None
    return [int(d >= MIN_DIFF and d >= RELATIVE * top) for d in diffs]


def label_faces(row: ManifestRow, decoded: DecodedClips, tracks: Sequence[Sequence[Box]],
                endpoint: str | None = None) -> tuple[list[int], str]:
    """``(label per face track, note or "")`` of a video whose tracks hold one box per clip."""
    if row.label == 0 or len(tracks) < 2:
        return [int(row.label)] * len(tracks), ""
    every = [int(row.label)] * len(tracks)
    if not row.original:
        return every, "several faces and no known original: every face labelled fake"
    middle = [len(idx) // 2 for idx in decoded.indices]
    try:
        original = read_frames(FsPath.of(row.original, endpoint), [idx[m] for idx, m in zip(decoded.indices, middle)])
    except VideoError as exc:
        return every, f"original unreadable ({exc.reason}): every face labelled fake"
    if len(original) != len(decoded.frames) or original.shape[1:] != decoded.frames[0].shape[1:]:
        return every, "original has other frames or picture size: every face labelled fake"
    noise = float(np.mean([outside_difference(decoded.frames[c][m], original[c], [t[c] for t in tracks])
                           for c, m in enumerate(middle)]))
    diffs = [max(0.0, float(np.mean([box_difference(decoded.frames[c][m], original[c], track[c])
                                     for c, m in enumerate(middle)])) - noise) for track in tracks]
    labels = decide(diffs)
    if labels is None:
        return every, "no face differs from the original: every face labelled fake"
    return labels, f"face labels from the original: {labels} (mean grey difference {[round(d, 1) for d in diffs]})"
