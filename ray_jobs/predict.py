"""``interceptor predict PATH...``: score video files (or folders of them) with the Interceptor.

    interceptor predict clip.mp4 folder/ [--storage-path runs] [--name interceptor] [--out results.json]
    python -m ray_jobs.predict ...

The Interceptor is the ensemble fitted by ``interceptor evaluate`` and saved at
``<storage>/<name>/ensemble/ensemble.json``: which final checkpoint of each specialist it combines,
their weights, temperature, bias, aggregation, and the clip settings the shards were prepared
with. For every video:

1. decode its evenly spread clips and detect its faces ONCE (:func:`data_pipeline.clips.extract_clips`
   with the plain ``resize`` crop): every face (up to ``max_faces``) gets its clips;
2. apply each *distinct* stage filter that the checkpoints were trained with (their recipe's
   ``preprocessing``: ``resize``, ``clahe``, ``clahe_bilateral``) to those crops once;
3. score the clips with every specialist on its own filter's crops;
4. per face: aggregate its clips to one probability per specialist, combine with the fitted weights,
   calibrate, clip (:class:`specialists.ensemble.Ensemble`); the video's probability is the maximum
   over its faces (any fake face makes a fake video), and its ``specialists`` are that face's.

One JSON object per video is printed (JSON Lines) as soon as it is scored::

    {"path": ".../v.mp4", "prob_fake": 0.93, "verdict": "fake", "specialists": {"cm": 0.97, ...},
     "clips": 16, "face_found": true, "reason": null, "detail": null, "seconds": 0.41,
     "faces": [{"face_index": 0, "prob_fake": 0.93, "clips": 8, "box": [x0, y0, x1, y1], "specialists": {...}},
               {"face_index": 1, "prob_fake": 0.08, ...}]}

A video that gives no usable clip (no face, unreadable, truncated, too short) is not an error: it
gets ``prob_fake`` 0.5, ``verdict`` ``"unscored"`` and the reason (as the DFDC winner scored
videos without a face). ``--out FILE`` also writes all results as one JSON array.

The Interceptor itself is :class:`ray_jobs.interceptor.Interceptor`; finding and checking the
checkpoints of an ensemble is :mod:`ray_jobs.members` (shared with ``interceptor evaluate``).
"""

from __future__ import annotations

import argparse
import sys

from data_pipeline.faces import DetectorError
from ray_jobs.checkpoints import CheckpointError
from ray_jobs.cli_common import add_storage_flags, job_parser, run_cli
from ray_jobs.config import TrainConfig
from ray_jobs.interceptor import collect_videos, open_interceptor, predict_videos
from ray_jobs.storage import Storage
from specialists.ensemble import EnsembleError


def build_parser() -> argparse.ArgumentParser:
    ap = job_parser("interceptor predict", __doc__)
    ap.add_argument("paths", nargs="+", metavar="PATH", help="video files and/or folders of videos")
    ap.add_argument("--config", help="run config YAML of the train job (storage_path, s3_endpoint, name are used)")
    add_storage_flags(ap, name_help="experiment name (default: interceptor)",
                      storage_help="local path or s3://bucket/prefix of the runs (default: runs)")
    ap.add_argument("--out", help="also write all results to this JSON file (an array)")
    ap.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--clips-per-video", type=int, help="clips spread over each video (default: as prepared)")
    ap.add_argument("--detector", help="face detector (default: as prepared)")
    ap.add_argument("--quiet", action="store_true", help="no progress on stderr")
    return ap


def storage_from_args(args: argparse.Namespace) -> tuple[Storage, str]:
    """Storage and experiment name from ``--config`` (a train run config) and the flags."""
    storage_path, endpoint, name = "runs", None, "interceptor"
    if args.config:
        tc = TrainConfig.load(args.config)
        storage_path, endpoint, name = tc.storage_path, tc.s3_endpoint, tc.name
    return (Storage(args.storage_path or storage_path, args.s3_endpoint or endpoint), args.name or name)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = {k: v for k, v in (("clips_per_video", args.clips_per_video), ("detector", args.detector))
                 if v is not None}

    def predict() -> None:
        videos = collect_videos(args.paths)
        storage, name = storage_from_args(args)
        interceptor = open_interceptor(storage, name, args.device, overrides, args.threads)
        predict_videos(interceptor, videos, args.out, args.quiet)

    return run_cli("interceptor predict", predict, errors=(CheckpointError, EnsembleError, DetectorError))


if __name__ == "__main__":
    sys.exit(main())
