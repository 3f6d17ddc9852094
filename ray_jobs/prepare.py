"""``interceptor prepare``: a Ray Data job that turns a dataset's videos into face-clip Parquet shards.

Pipeline::

    read_manifest (FF++ / Celeb-DF / DFDC layout)
      -> batches of ``videos_per_shard`` videos per (split, chunk), sorted by video id
      -> drop batches whose shard already exists (resume)
      -> ray.data.from_items(batches).flat_map(clips.shard_task)   # one task per shard:
             decode -> detect -> crop -> filter -> write ONE shard atomically -> per-video status
      -> stream the statuses (progress)  ->  summary.json + a one-line summary

* Streaming: a task holds one batch of videos; the driver holds only the manifest and statuses.
* Resumable: shard names are a digest of their videos (:func:`data_pipeline.shards.shard_name`),
  so a rerun skips finished shards and redoes only the missing ones; shards are written as
  ``.tmp`` then renamed (on S3: uploaded complete, in one object), so a crash never leaves a
  partial ``.parquet``. Each shard carries its
  per-video status in its Parquet metadata, and ``summary.json`` is rebuilt from all shards, so a
  resumed run reports exactly what an uninterrupted one does.
* Reported, never dropped: videos listed but missing, unreadable/corrupt/empty files, videos
  with no face, and (from the readers) videos that cannot be placed in a split are in
  ``summary.json["skipped"]`` with their path and reason; a video without an audio track is
  used (``has_audio`` false) and listed in ``summary.json["notes"]``.
* The output folder records the configuration in ``prepare_config.json``; preparing into it
  with different clip settings is refused (its shards would mix).

``summary.json``: ``videos`` (listed / used / skipped), ``clips``, ``shards``, counts per split
(videos, clips, skipped, real, fake), per label, per method and (DFDC) per chunk, ``skipped``
(one entry per unusable video: video_id, path, split, label, method, reason, detail),
``skip_reasons`` (counts) and ``notes`` (used videos with a remark, e.g. ``no audio track``).

``root`` and ``out`` are local/NFS paths or ``s3://bucket/prefix`` URIs (``--s3-endpoint`` for an
S3-compatible server; credentials from each node's own AWS environment, files or role): videos
are decoded from the objects by ranged reads (no local copy), and each shard is uploaded as one
complete object (S3 publishes it only when complete, so resume and "never a partial shard" hold
there too). On a multi-node cluster ``out`` must be a location every node can write (S3, NFS):
each task writes its shard there directly.

Without ``root`` the job prepares the synthetic benchmark (generated on first use under
``synthetic_root``). Run as ``interceptor prepare ...``, ``python -m ray_jobs.prepare ...``, or
``ray job submit --address http://127.0.0.1:8265 --working-dir . -- python -m ray_jobs.prepare ...``.
"""

from __future__ import annotations

import argparse
import sys

from data_pipeline.faces import DetectorError
from data_pipeline.filters import Preprocessing
from data_pipeline.sources import Dataset, ManifestError
from ray_jobs.cli_common import add_s3_endpoint_flag, flag_overrides, job_parser, run_cli
from ray_jobs.sharding import PrepareConfig, run

#: flags that set the PrepareConfig field of the same name
FLAG_FIELDS = ("dataset", "root", "out", "s3_endpoint", "splits", "chunks", "preprocessing", "size", "clip_len", "clips_per_video",
               "detector", "videos_per_shard", "max_videos", "num_cpus", "address", "synthetic_scale")


def build_parser() -> argparse.ArgumentParser:
    ap = job_parser("interceptor prepare", __doc__)
    ap.add_argument("--config", help="prepare settings YAML (fields of PrepareConfig)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a setting, e.g. --set reader.compression=c40 --set detector_options.max_side=192")
    ap.add_argument("--dataset", choices=[d.value for d in Dataset])
    ap.add_argument("--root", help="dataset root, a local path or s3://bucket/prefix (default: the synthetic benchmark)")
    ap.add_argument("--out", help="output folder for shards and summary.json, a local path or s3://bucket/prefix")
    add_s3_endpoint_flag(ap)
    ap.add_argument("--splits", nargs="+", choices=["train", "val", "test"])
    ap.add_argument("--chunks", nargs="+", type=int, help="DFDC chunks to prepare")
    ap.add_argument("--preprocessing", choices=[p.value for p in Preprocessing])
    ap.add_argument("--size", type=int, help="face crop side S")
    ap.add_argument("--clip-len", type=int, help="frames per clip T")
    ap.add_argument("--clips-per-video", type=int)
    ap.add_argument("--detector", help="face detector (haar, yunet, mtcnn)")
    ap.add_argument("--videos-per-shard", type=int)
    ap.add_argument("--max-videos", type=int, help="at most this many videos per split")
    ap.add_argument("--no-audio", action="store_true", help="do not cut audio windows")
    ap.add_argument("--num-cpus", type=int, help="CPUs of the local Ray (no cluster)")
    ap.add_argument("--address", help="Ray cluster address")
    ap.add_argument("--synthetic-scale", choices=["tiny", "small", "default"])
    return ap


def config_from_args(args: argparse.Namespace) -> PrepareConfig:
    overrides = flag_overrides(args, FLAG_FIELDS)
    if args.no_audio:
        overrides.append("audio=false")
    return PrepareConfig.load(args.config, [*overrides, *args.overrides])


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli("interceptor prepare", lambda: run(config_from_args(args)), errors=(ManifestError, DetectorError))


if __name__ == "__main__":
    sys.exit(main())
