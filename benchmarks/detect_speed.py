"""What face detection costs next to decoding, per 10 s DFDC-like video (720p and 1080p, 30 fps).

    python benchmarks/detect_speed.py [--heights 720,1080] [--seconds 10 --fps 30] [--winner-frames 96]

The videos are the real photograph of ``tests/real_face.py`` moving over a textured background, with
an AAC track (DFDC videos have one), encoded H.264 at ``--fps``. One process, single video at a
time; each row is timed ``--repeats`` times and the fastest is kept (the winner's row once).

Rows (video frames/s = the video's frames / the seconds spent on it; ratio = that rate / the rate
of its decode-only row, i.e. the share of throughput left once detection is added):

* ``decode all frames``: PyAV, every frame to RGB (what ``read_frames`` does, without keeping them).
* ``decode pipeline clips``: ``decode_clips`` with ``ClipConfig()``'s defaults (8 clips of 4 frames,
  stride 1, log-mel audio windows), the decode of ``interceptor prepare``.
* ``haar, probe frames``: + the pipeline's detection step (``clips.detect_faces``: the probe frames
  of the clips, ``ClipConfig().probes`` = 1 per clip) with Haar, one frame at a time.
* ``mtcnn, probe frames one by one``: the same probe frames through the registered ``mtcnn``
  detector's ``detect``, one call per frame.
* ``mtcnn, probe frames batched``: ``clips.detect_faces`` with ``mtcnn``: its ``detect_batch``
  downscales the probe frames (longest side 320) and runs them through MTCNN as ONE batch.
* ``DFDC winner (all frames, 0.5x, batch 32)``: the winner's preprocessing (selimsef): MTCNN
  (thresholds 0.85/0.95/0.95) on EVERY frame resized to half, in batches of 32. Detection is timed
  on the first ``--winner-frames`` frames (0: all) and its per-frame cost added to decode-all's.
* ``decode tasks + mtcnn actor stage``: the preparation's decoding tasks and its MTCNN actor stage
  alone (Ray Data, 16 copies of the video, local Ray of 2 CPUs, steady state; :func:`time_ray_detection`).
* ``whole prepare with the mtcnn actor stage``: all of ``interceptor prepare`` (decode tasks, the
  MTCNN actor, crop + the dfdc stage filter ``clahe_bilateral`` at 224 px, the shard writer) on 16
  copies, steady state (:func:`time_ray_actor_stage`). These two rows use both CPUs at once; the others one process.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import av
import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from data_pipeline.clips import ClipConfig, detect_faces, probe_frames  # noqa: E402
from data_pipeline.faces import available_detectors, create_detector  # noqa: E402
from data_pipeline.video import decode_clips, probe  # noqa: E402
from tests.real_face import Motion, make_real_face_video  # noqa: E402

#: the DFDC winner's MTCNN batch size and thresholds (preprocessing/face_detector.py, FacenetDetector)
WINNER_BATCH = 32
WINNER_THRESHOLDS = (0.85, 0.95, 0.95)
#: the decode-only baseline of the rows that work on the pipeline's clips (a row-name prefix)
CLIPS = "decode pipeline clips"


def best_of(repeats: int, fn: Callable[[], object]) -> tuple[float, object]:
    """``(fastest seconds, result of the last call)`` of ``repeats`` calls of ``fn``."""
    best, result = float("inf"), None
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def decode_all(path: Path, keep: Callable[[int, np.ndarray], None] | None = None) -> int:
    """Decode every frame to RGB as ``read_frames`` does (threaded decoder, ``rgb24``); ``keep``
    sees each ``(index, frame)``. Returns the number of frames."""
    n = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for packet in container.demux(stream):
            for frame in packet.decode():
                rgb = frame.to_ndarray(format="rgb24")
                if keep is not None:
                    keep(n, rgb)
                n += 1
    return n


def winner_seconds_per_frame(path: Path, max_frames: int) -> tuple[float, int]:
    """The DFDC winner's detection: ``(seconds per frame for resize + MTCNN, frames timed)``."""
    from facenet_pytorch import MTCNN  # type: ignore[import-not-found]

    model = MTCNN(margin=0, thresholds=list(WINNER_THRESHOLDS), device="cpu")
    halves: list[np.ndarray] = []
    resize_s = 0.0

    def keep(i: int, rgb: np.ndarray) -> None:
        nonlocal resize_s
        if max_frames and i >= max_frames:
            return
        t0 = time.perf_counter()
        halves.append(cv2.resize(rgb, (rgb.shape[1] // 2, rgb.shape[0] // 2), interpolation=cv2.INTER_AREA))
        resize_s += time.perf_counter() - t0

    decode_all(path, keep)
    model.detect(np.stack(halves[:2]))  # warm-up
    t0 = time.perf_counter()
    for s in range(0, len(halves), WINNER_BATCH):
        model.detect(np.stack(halves[s : s + WINNER_BATCH]))
    return (time.perf_counter() - t0 + resize_s) / len(halves), len(halves)


def time_ray_actor_stage(path: Path, videos: int = 16) -> float:
    """Seconds per video of ``interceptor prepare`` on ``videos`` copies of ``path`` (a DFDC layout),
    with MTCNN as its Ray Data actor stage (one actor) on a local Ray of 2 CPUs: decoding and cropping
    run as tasks next to the actor, so this row uses both CPUs at once. Steady state: timed from the
    first shard written to the end (Ray's, the actor's and the workers' start excluded)."""
    import json

    from ray_jobs.cluster import init_ray
    from ray_jobs.sharding import PrepareConfig, run

    init_ray(None, 2)
    with tempfile.TemporaryDirectory(prefix="detect-speed-ray-") as tmp:
        part = Path(tmp) / "dfdc" / "dfdc_train_part_0"
        part.mkdir(parents=True)
        meta = {}
        for i in range(videos):
            (part / f"v{i}.mp4").symlink_to(path.resolve())
            meta[f"v{i}.mp4"] = {"label": "REAL", "split": "train", "original": None}
        (part / "metadata.json").write_text(json.dumps(meta))
        cfg = PrepareConfig(dataset="dfdc", root=str(Path(tmp) / "dfdc"), out=str(Path(tmp) / "shards"),
                            detector="mtcnn", detector_actors=1, videos_per_shard=2,
                            reader={"val_fraction": 0.0, "test_fraction": 0.0})
        shards_done: list[float] = []
        run(cfg, log=lambda msg: shards_done.append(time.perf_counter()) if msg.startswith("[prepare] shard ") else None)
        end = time.perf_counter()
        return (end - shards_done[0]) / (videos - 2)  # steady state: from the first shard (2 videos) to the end


def time_ray_detection(path: Path, videos: int = 16) -> float:
    """Seconds per video of the preparation's first two Ray Data stages alone on ``videos`` copies of
    ``path``: decoding tasks then the MTCNN actor stage (one actor sharing the 2 CPUs), rows consumed
    and dropped (no crop, filter or shard write). Steady state: from the first video out to the last."""
    import json

    import ray

    from data_pipeline.prepare_stages import DetectStage, decode_stage
    from data_pipeline.sources.manifest import ManifestRow
    from ray_jobs.cluster import init_ray

    init_ray(None, 2)
    clip = ClipConfig(detector="mtcnn").to_dict()
    rows = [ManifestRow(f"v{i}.mp4", str(path.resolve()), "dfdc", 0, "real", f"v{i}", "train").to_dict()
            for i in range(videos)]
    items = [{"shard": f"s{i}", "videos": json.dumps(rows[i:i + 2])} for i in range(0, videos, 2)]
    ds = (ray.data.from_items(items, override_num_blocks=len(items))
          .flat_map(decode_stage, fn_kwargs={"clip": clip}, num_cpus=1)
          .map_batches(DetectStage, fn_constructor_kwargs={"clip": clip, "torch_threads": 1}, batch_size=4,
                       compute=ray.data.ActorPoolStrategy(size=1), num_cpus=0))
    times = [time.perf_counter() for row in ds.select_columns(["detections"]).iter_rows() if row["detections"]]
    assert len(times) == videos, f"{len(times)} of {videos} videos detected"
    return (times[-1] - times[0]) / (videos - 1)  # steady state: from the first video out to the last


def measure(path: Path, repeats: int, winner_frames: int, mtcnn: bool) -> list[tuple[str, float | None, str]]:
    """``(row, seconds per video or None, decode baseline row)`` for one video."""
    cfg = ClipConfig()
    dec_all, _ = best_of(repeats, lambda: decode_all(path))
    dec_clips, decoded = best_of(
        repeats, lambda: decode_clips(path, cfg.clip_len, cfg.clips_per_video, cfg.stride, cfg.audio))
    probes = [decoded.frames[c][i] for c, i in probe_frames(decoded, cfg.probes)]
    rows: list[tuple[str, float | None, str]] = [
        ("decode all frames", dec_all, "decode all frames"),
        (f"decode pipeline clips ({len(decoded.frames)}x{cfg.clip_len} + audio)", dec_clips, CLIPS),
    ]
    haar = create_detector("haar")
    t, _ = best_of(repeats, lambda: detect_faces(decoded, haar, cfg.probes))
    rows.append((f"haar, {len(probes)} probe frames", dec_clips + t, CLIPS))
    if mtcnn:
        det = create_detector("mtcnn")
        det.detect_batch(probes[:2])  # warm-up
        t, _ = best_of(repeats, lambda: [det.detect(f) for f in probes])
        rows.append((f"mtcnn, {len(probes)} probe frames one by one", dec_clips + t, CLIPS))
        t, _ = best_of(repeats, lambda: detect_faces(decoded, det, cfg.probes))
        rows.append((f"mtcnn, {len(probes)} probe frames batched (detect_batch)", dec_clips + t, CLIPS))
        per_frame, timed = winner_seconds_per_frame(path, winner_frames)
        rows.append((f"DFDC winner: mtcnn all frames 0.5x, batch {WINNER_BATCH} ({timed} timed)",
                     dec_all + per_frame * decoded.info.num_frames, "decode all frames"))
        rows.append(("decode tasks + mtcnn actor stage (Ray Data, 2 CPUs)", time_ray_detection(path), CLIPS))
        rows.append(("whole prepare with the mtcnn actor stage (2 CPUs)", time_ray_actor_stage(path), CLIPS))
    return rows


def print_table(results: dict[str, list[tuple[str, float | None, str]]], frames: dict[str, int]) -> None:
    sizes = list(results)
    print(f"\n{'':58s}" + "".join(f"{s + ' (' + str(frames[s]) + ' frames)':>36s}" for s in sizes))
    print(f"{'row':58s}" + "".join(f"{'s/video':>12s}{'video fr/s':>12s}{'ratio':>12s}" for _ in sizes))
    for k, (name, _, base) in enumerate(results[sizes[0]]):
        cells = ""
        for s in sizes:
            secs = results[s][k][1]
            base_s = next(v for row, v, _ in results[s] if row.startswith(base))
            if secs is None:
                cells += f"{'pending':>12s}{'':>12s}{'':>12s}"
            else:
                cells += f"{secs:12.2f}{frames[s] / secs:12.1f}{(base_s or secs) / secs:12.2f}"
        print(f"{name:58s}{cells}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--heights", default="720,1080", help="frame heights (16:9)")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--winner-frames", type=int, default=96, help="frames the winner's detection is timed on (0: all)")
    ap.add_argument("--keep", type=Path, help="folder to keep (and reuse) the generated videos in")
    args = ap.parse_args(argv)
    mtcnn = "mtcnn" in available_detectors()
    if not mtcnn:
        print("facenet_pytorch is not installed: MTCNN rows left out")
    with tempfile.TemporaryDirectory(prefix="detect-speed-") as tmp:
        work = args.keep or Path(tmp)
        results, frames = {}, {}
        for height in (int(h) for h in args.heights.split(",") if h):
            width = round(height * 16 / 9 / 2) * 2
            path = work / f"real-{width}x{height}-{args.seconds:g}s-{args.fps:g}fps.mp4"
            if not path.exists():
                t0 = time.perf_counter()
                motion = Motion(width=width, height=height, fps=args.fps, seconds=args.seconds, x_path=(0.3, 0.7))
                make_real_face_video(path, motion, audio=True)
                print(f"generated {path.name} in {time.perf_counter() - t0:.1f} s")
            key = f"{width}x{height}"
            frames[key] = probe(path).num_frames
            results[key] = measure(path, args.repeats, args.winner_frames, mtcnn)
    print_table(results, frames)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
