"""Throughput of the whole preparation vs decoding alone, on the same videos and cores, one run.

    python benchmarks/prepare_throughput.py [--root DIR --dataset ffpp] [--num-cpus 2] [--size 224]

1. Videos: ``--root`` (a dataset root in its public layout), or a synthetic FF++ benchmark
   generated into a temporary folder (``--scale``, default ``small``: 100 videos of 144x144 px).
2. Decode-only baseline: :func:`data_pipeline.video.decode_clips` on every video with exactly the
   clip settings of the preparation (same clips, frames and audio windows), in a process pool of
   ``--num-cpus`` workers: the pure cost of reading the data, with no Ray overhead.
3. Whole preparation: ``ray_jobs.sharding.run`` on a local Ray with ``--num-cpus`` CPUs: decode +
   face detection + crop + stage filter + Parquet encode + atomic write + report. Starting Ray is
   a one-off cost of the cluster, timed and printed separately, not counted.

Frames/s counts the frames that end up in clips (clips x T). Files are read once beforehand so
both passes see a warm page cache. Prints both rates and their ratio (target >= 0.7).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from multiprocessing import get_context
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from data_pipeline.video import AudioConfig, VideoError, decode_clips, probe  # noqa: E402


def _decode_one(args: tuple[str, int, int, int, dict | None]) -> int:
    path, clip_len, clips, stride, audio = args
    try:
        decoded = decode_clips(path, clip_len, clips, stride, AudioConfig(**audio) if audio is not None else None)
    except VideoError:
        return 0
    return sum(len(f) for f in decoded.frames)


def decode_only(paths: list[str], clip_len: int, clips: int, stride: int, audio: dict | None,
                workers: int) -> tuple[int, float]:
    """(frames, seconds) of decoding every video's clips in ``workers`` processes."""
    jobs = [(p, clip_len, clips, stride, audio) for p in paths]
    ctx = get_context("spawn")
    with ctx.Pool(workers, initializer=_limit_threads) as pool:
        pool.map(_decode_one, jobs[: workers])  # start-up and imports, not timed
        start = time.perf_counter()
        frames = sum(pool.map(_decode_one, jobs, chunksize=1))
        return frames, time.perf_counter() - start


def _warm(row: dict) -> dict:
    import data_pipeline.clips  # noqa: F401

    return row


def _limit_threads() -> None:
    import cv2

    cv2.setNumThreads(1)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", help="dataset root (default: a generated synthetic FF++ benchmark)")
    ap.add_argument("--dataset", default="ffpp")
    ap.add_argument("--scale", default="small", help="synthetic scale when --root is not given")
    ap.add_argument("--frame-size", help="WIDTHxHEIGHT of generated videos (default: the scale's, 144x144)")
    ap.add_argument("--num-frames", type=int, help="frames per generated video (default: the scale's)")
    ap.add_argument("--fps", type=float, help="frame rate of generated videos (default: the scale's)")
    ap.add_argument("--pairs", type=int, help="FF++ pairs of the generated benchmark (default: the scale's)")
    ap.add_argument("--num-cpus", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--clips-per-video", type=int, default=8)
    ap.add_argument("--clip-len", type=int, default=4)
    ap.add_argument("--videos-per-shard", type=int, default=16)
    ap.add_argument("--preprocessing", default=None, help="stage filter (default: the dataset's stage)")
    ap.add_argument("--json", help="also write the numbers to this JSON file")
    return ap.parse_args(argv)


def _dataset_root(args: argparse.Namespace, tmp: Path) -> Path:
    """``--root``, or a synthetic benchmark of ``--scale`` generated under ``tmp``."""
    if args.root:
        return Path(args.root).resolve()
    from data_pipeline import synthetic

    extra: dict = {}
    if args.frame_size:
        width, height = (int(v) for v in args.frame_size.lower().split("x"))
        extra.update(width=width, height=height)
    if args.num_frames:
        extra["num_frames"] = args.num_frames
    if args.fps:
        extra["fps"] = args.fps
    if args.pairs:
        extra["ffpp_pairs"] = args.pairs
    cfg = synthetic.config_for_scale(args.scale, datasets=(args.dataset,), **extra)
    synthetic.generate(tmp / "bench", cfg, progress=None)
    return tmp / "bench" / args.dataset


def _prepare_config(args: argparse.Namespace, root: Path, tmp: Path):
    """The preparation's config and the paths of the videos it will read (page cache warmed)."""
    from data_pipeline.sources import read_manifest
    from ray_jobs.sharding import PrepareConfig, select_rows

    pcfg = PrepareConfig(dataset=args.dataset, root=str(root), out=str(tmp / "shards"), size=args.size,
                         clip_len=args.clip_len, clips_per_video=args.clips_per_video,
                         videos_per_shard=args.videos_per_shard, num_cpus=args.num_cpus,
                         preprocessing=args.preprocessing)
    rows = [r for r in select_rows(read_manifest(args.dataset, root, **pcfg.reader), pcfg) if r.exists]
    paths = [r.path for r in rows]
    for p in paths:  # warm the page cache for both passes
        Path(p).read_bytes()
    return pcfg, paths


def _time_preparation(pcfg, num_cpus: int) -> tuple[dict, float, float]:
    """(summary, ray-init seconds, preparation seconds) of ``ray_jobs.sharding.run`` on a local Ray."""
    import ray

    from ray_jobs.cluster import init_ray
    from ray_jobs.sharding import run

    t0 = time.perf_counter()
    init_ray(num_cpus=num_cpus)
    # start the worker processes and their imports, as the pool's warm-up map does
    ray.data.range(num_cpus, override_num_blocks=num_cpus).map(_warm, num_cpus=1).take_all()
    init_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    summary = run(pcfg, log=lambda _m: None)
    prep_s = time.perf_counter() - t0
    ray.shutdown()
    return summary, init_s, prep_s


def _report(result: dict, dec_s: float, prep_s: float, init_s: float) -> str:
    r = result
    dec_rate, prep_rate = r["decode_frames"] / dec_s, r["prepare_frames"] / prep_s
    return (f"decode-only: {r['decode_frames']} frames in {dec_s:.1f} s = {dec_rate:.0f} frames/s; "
            f"whole preparation: {r['prepare_frames']} frames in {prep_s:.1f} s = {prep_rate:.0f} frames/s "
            f"(+{init_s:.1f} s ray.init and worker start, not counted); {r['videos']} videos of "
            f"{r['frame_size']} x {r['frames_per_video']} frames, {r['num_cpus']} CPUs, S={r['size']}, "
            f"{r['preprocessing']}; ratio prepare/decode = {r['ratio']:.2f} (target >= 0.7)")


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="prep-bench-") as tmp:
        root = _dataset_root(args, Path(tmp))
        pcfg, paths = _prepare_config(args, root, Path(tmp))
        clip = pcfg.clip_config()
        audio = json.loads(json.dumps(clip.to_dict()["audio"]))
        info = probe(paths[0])
        dec_frames, dec_s = decode_only(paths, clip.clip_len, clip.clips_per_video, clip.stride, audio, args.num_cpus)
        summary, init_s, prep_s = _time_preparation(pcfg, args.num_cpus)

    prep_frames = summary["clips"] * clip.clip_len
    dec_rate, prep_rate = dec_frames / dec_s, prep_frames / prep_s
    result = {
        "videos": len(paths),
        "frame_size": f"{info.width}x{info.height}",
        "frames_per_video": info.num_frames,
        "num_cpus": args.num_cpus,
        "size": clip.size,
        "preprocessing": clip.preprocessing.value,
        "decode_frames": dec_frames,
        "decode_seconds": round(dec_s, 2),
        "decode_fps": round(dec_rate, 1),
        "prepare_frames": prep_frames,
        "prepare_seconds": round(prep_s, 2),
        "prepare_fps": round(prep_rate, 1),
        "ray_init_seconds": round(init_s, 2),
        "ratio": round(prep_rate / dec_rate, 3),
    }
    print(_report(result, dec_s, prep_s, init_s))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
