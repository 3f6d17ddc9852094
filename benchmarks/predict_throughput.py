"""Throughput of ``interceptor predict`` for the full ensemble on CPU, and what the shared decode saves.

    python benchmarks/predict_throughput.py [--videos 8] [--backbone test_efficientnet] [--size 48]
    python benchmarks/predict_throughput.py --storage-path demo_out/runs --name demo   # a trained ensemble

Without ``--storage-path`` it builds, in a temporary folder, an ensemble of EVERY registered
specialist (one checkpoint each at ``--stage``, tiny backbone by default), renders ``--videos``
synthetic H.264 videos (half real, half fakes of the synthetic families), fits the ensemble's
weights and calibration on their scores and loads it through the same path as ``interceptor
predict``. Then, in one run and on the same videos, it times:

* **shared**: :meth:`Interceptor.predict` — each video decoded and its face detected ONCE, each
  distinct stage filter applied once, every specialist scored, combined;
* **per specialist**: the naive way — for every specialist, decode the video, detect the face and
  filter with that specialist's preprocessing, score that specialist only; then combine.

The two alternate video by video (so load changes hit both alike); the best of ``--repeats``
passes counts. It prints videos/s of both and their ratio (per-specialist time / shared time), plus where the
time of one shared prediction goes (decode + detect + crop vs filters + models).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from data_pipeline import synthetic
from data_pipeline.synthetic import FAMILIES, SynthConfig
from ray_jobs.checkpoints import build_payload, model_from_checkpoint, save_checkpoint
from ray_jobs.config import StageChain
from ray_jobs.interceptor import Interceptor, clip_settings
from ray_jobs.layout import COMPLETE_FILE, ensemble_parts, final_parts
from ray_jobs.members import check_members, discover_members
from ray_jobs.runner import SpecialistRunner
from ray_jobs.storage import Storage
from specialists import create_model, list_specialists
from specialists.ensemble import Ensemble, fit_ensemble


def build_ensemble(root: Path, videos: list[Path], labels: list[int], args: argparse.Namespace) -> tuple[Storage, str]:
    """Every registered specialist as a final checkpoint of ``args.stage``, and an ensemble fitted
    on the given videos' scores, saved where ``interceptor predict`` finds it."""
    storage, name = Storage(str(root / "runs")), "bench"
    recipe = StageChain.load().get(args.stage)
    for key in list_specialists():
        torch.manual_seed(0)
        model = create_model(key, backbone=args.backbone, image_size=args.size, num_frames=args.clip_len,
                             embed_dim=64, num_heads=4)
        state = SpecialistRunner(model, recipe, log_every=0, class_counts={0: 1, 1: 1}).state_dict()
        parts = final_parts(name, key, recipe.name)
        save_checkpoint(storage.path(*parts), build_payload(state, model.config, recipe))
        storage.write_json({"specialist": key, "stage": recipe.name}, *parts, COMPLETE_FILE)
    members = discover_members(storage, name, StageChain.load())
    fmt = check_members(members)
    models = {m.specialist: model_from_checkpoint(storage.path(*m.parts)).eval() for m in members}
    keys = list(models)
    clips = {"clips_per_video": args.clips_per_video, "detector": "haar"}
    # score the videos with the un-fitted (equal-weight) combination to get the fitting data
    unfitted = Ensemble(keys, [1 / len(keys)] * len(keys), extra={"clips": clips})
    prior = Interceptor(unfitted, models, {m.specialist: m.preprocessing for m in members},
                        clip_settings(unfitted, fmt), audio_shape=(int(fmt["audio_mels"]), int(fmt["audio_steps"])))
    per_video = []
    for v in videos:
        per_video.append(prior.ensemble.score_clips(prior.clip_probs(prior.extract(v)))[1])
    ens = fit_ensemble({k: [p[k] for p in per_video] for k in keys}, labels,
                       extra={"checkpoints": {m.specialist: m.record() for m in members}, "clips": clips})
    storage.write_json(ens.to_dict(), *ensemble_parts(name))
    return storage, name


def shared_decode(icp: Interceptor, video: Path) -> None:
    """The product path: one decode and detection, every specialist, combined."""
    r = icp.predict(video)
    if r["reason"] is not None:
        raise RuntimeError(f"{video}: {r['reason']} ({r['detail']})")


def decode_per_specialist(icp: Interceptor, video: Path) -> None:
    """The naive path: decode, detect and filter once per specialist, then combine."""
    probs = {}
    for key, kind in icp.preprocessing.items():
        probs.update(icp.clip_probs(icp.extract(video, kind), [key]))
    icp.ensemble.score_clips(probs)


def split_shared(icp: Interceptor, video: Path) -> tuple[float, float]:
    """Seconds of (decode + detect + crop) and of (filters + every model + combining) of one
    shared prediction."""
    t = time.perf_counter()
    rows = icp.extract(video)
    t1 = time.perf_counter()
    icp.ensemble.score_clips(icp.clip_probs(rows))
    return t1 - t, time.perf_counter() - t1


def time_all(icp: Interceptor, videos: list[Path], repeats: int) -> dict[str, float]:
    """Total seconds over ``videos`` of the shared path, the per-specialist path and the two parts
    of the shared path, each the best of ``repeats`` passes. The measurements alternate video by
    video, so that a change of machine load hits them alike."""
    best = {k: float("inf") for k in ("shared", "per_specialist", "extract", "models")}
    for _ in range(repeats):
        totals = dict.fromkeys(best, 0.0)
        for v in videos:
            for key, fn in (("shared", shared_decode), ("per_specialist", decode_per_specialist)):
                t = time.perf_counter()
                fn(icp, v)
                totals[key] += time.perf_counter() - t
            e, m = split_shared(icp, v)
            totals["extract"] += e
            totals["models"] += m
        best = {k: min(best[k], totals[k]) for k in best}
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--storage-path", help="use the trained ensemble in this storage (with --name)")
    ap.add_argument("--name", default="interceptor")
    ap.add_argument("--videos", type=int, default=8, help="synthetic videos to score")
    ap.add_argument("--height", type=int, default=144)
    ap.add_argument("--width", type=int, default=144)
    ap.add_argument("--frames", type=int, default=36, help="frames per synthetic video")
    ap.add_argument("--backbone", default="test_efficientnet")
    ap.add_argument("--size", type=int, default=48, help="face crop side S of the built ensemble")
    ap.add_argument("--clip-len", type=int, default=4)
    ap.add_argument("--clips-per-video", type=int, default=6)
    ap.add_argument("--stage", default="dfdc", help="stage of the built checkpoints (its filter)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--repeats", type=int, default=2, help="timed passes; the best is reported")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="predict-bench-") as tmp:
        root = Path(tmp)
        cfg = SynthConfig(height=args.height, width=args.width, num_frames=args.frames)
        normal = [f for f in FAMILIES if f != "low_light"]
        videos, labels = [], []
        for i in range(args.videos):
            family = None if i % 2 == 0 else normal[(i // 2) % len(normal)]
            path = root / "videos" / f"{i:03d}-{family or 'real'}.mp4"
            synthetic.write_sample(path, 1000 + i, cfg, family=family)
            videos.append(path)
            labels.append(int(family is not None))
        if args.storage_path:
            storage, name = Storage(args.storage_path), args.name
        else:
            storage, name = build_ensemble(root, videos, labels, args)
        icp = Interceptor.load(storage, name)
        n_models, filters = len(icp.models), sorted({k.value for k in icp.preprocessing.values()})
        backbones = sorted({m.config.backbone for m in icp.models.values()})
        print(f"ensemble: {n_models} specialists ({', '.join(icp.models)}), backbone {', '.join(backbones)}, "
              f"S={icp.clip_config.size} T={icp.clip_config.clip_len}, {icp.clip_config.clips_per_video} clips/video, "
              f"filters {filters}; videos {args.videos} x {args.width}x{args.height}x{args.frames} frames; "
              f"device cpu, torch threads {torch.get_num_threads()}")

        icp.predict(videos[0])  # warm-up: detector, allocator, first-call overheads
        t = time_all(icp, videos, args.repeats)
        n = len(videos)
        print(f"shared decode (predict):       {n / t['shared']:7.2f} videos/s  "
              f"({1000 * t['shared'] / n:7.1f} ms/video)")
        print(f"decode once per specialist:    {n / t['per_specialist']:7.2f} videos/s  "
              f"({1000 * t['per_specialist'] / n:7.1f} ms/video)")
        print(f"speed-up of the shared decode: {t['per_specialist'] / t['shared']:.2f}x  ({n_models} specialists)")
        print(f"one shared prediction: decode+detect+crop {1000 * t['extract'] / n:.1f} ms, filters+models+combine "
              f"{1000 * t['models'] / n:.1f} ms per video")
    return 0


if __name__ == "__main__":
    sys.exit(main())
