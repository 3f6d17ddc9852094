"""Throughput of the whole preparation vs decoding alone, on the same videos and cores, one run.

    python benchmarks/prepare_throughput.py [--root DIR --dataset ffpp] [--num-cpus 2] [--size 224]

1. Videos: ``--root`` (a dataset root in its public layout), or a synthetic FF++ benchmark
   generated into a temporary folder (``--scale``, default ``small``: 100 videos of 144x144 px).
2. Decode-only baseline: :func:`data_pipeline.video.decode_clips` on every video with exactly the
   clip settings of the preparation (same clips, frames and audio windows), in a process pool of
   ``--num-cpus`` workers: the pure cost of reading the data, with no Ray overhead.
3. Whole preparation: ``ray_jobs.prepare.run`` on a local Ray with ``--num-cpus`` CPUs: decode +
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


def decode_only(paths: list[str], clip_len: int, clips: int, stride: int, audio: dict | None, workers: int) -> tuple[int, float]:
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


def main(argv: list[str] | None = None) -> int:
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
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="prep-bench-") as tmp:
        if args.root:
            root = Path(args.root).resolve()
        else:
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
            synthetic.generate(Path(tmp) / "bench", cfg, progress=None)
            root = Path(tmp) / "bench" / args.dataset

        from ray_jobs.prepare import PrepareConfig, run, select_rows
        from data_pipeline.sources import read_manifest

        pcfg = PrepareConfig(dataset=args.dataset, root=str(root), out=str(Path(tmp) / "shards"), size=args.size,
                             clip_len=args.clip_len, clips_per_video=args.clips_per_video,
                             videos_per_shard=args.videos_per_shard, num_cpus=args.num_cpus,
                             preprocessing=args.preprocessing)
        clip = pcfg.clip_config()
        rows = [r for r in select_rows(read_manifest(args.dataset, root, **pcfg.reader), pcfg) if r.exists]
        paths = [r.path for r in rows]
        for p in paths:  # warm the page cache for both passes
            Path(p).read_bytes()
        audio = json.loads(json.dumps(clip.to_dict()["audio"]))
        info = probe(paths[0])

        dec_frames, dec_s = decode_only(paths, clip.clip_len, clip.clips_per_video, clip.stride, audio, args.num_cpus)

        import ray

        from ray_jobs.cluster import init_ray

        t0 = time.perf_counter()
        init_ray(num_cpus=args.num_cpus)
        # start the worker processes and their imports, as the pool's warm-up map does
        ray.data.range(args.num_cpus, override_num_blocks=args.num_cpus).map(_warm, num_cpus=1).take_all()
        init_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        summary = run(pcfg, log=lambda _m: None)
        prep_s = time.perf_counter() - t0
        ray.shutdown()

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
    print(f"decode-only: {dec_frames} frames in {dec_s:.1f} s = {dec_rate:.0f} frames/s; "
          f"whole preparation: {prep_frames} frames in {prep_s:.1f} s = {prep_rate:.0f} frames/s "
          f"(+{init_s:.1f} s ray.init and worker start, not counted); {len(paths)} videos of {result['frame_size']} x "
          f"{info.num_frames} frames, {args.num_cpus} CPUs, S={clip.size}, "
          f"{clip.preprocessing.value}; ratio prepare/decode = {result['ratio']:.2f} (target >= 0.7)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
