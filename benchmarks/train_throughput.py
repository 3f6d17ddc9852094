"""Ray Train + Ray Data loop vs a plain single-process PyTorch loop, same shards and model, one run.

    python benchmarks/train_throughput.py [--shards DIR] [--specialist cm] [--epochs 3] [--threads 1]
    python benchmarks/train_throughput.py --device cuda --backbone efficientnet_b4 --size 224 --plain-only

Without ``--shards`` it writes real-schema shards of a learnable task (64 px clips) to a temp dir.
Both paths run the same :class:`SpecialistRunner` epochs; the plain loop reads the Parquet files
with pyarrow in the training process, the Ray path is the train job's own ``TorchTrainer`` (one
worker streaming its Ray Data shard with ``iter_torch_batches``; class balancing and the
rows -> tensors conversion run in its prefetch threads, ``ray_jobs/collate.py``). Printed: samples/s
of each (epochs after the first), their ratio, and the fraction of the Ray loop's step time spent waiting for data.
Targets (issue 4): ratio >= 0.9 on CPU, data wait < 5%. ``--device cuda`` runs the loops on the
GPU with AMP (the runner's bf16 autocast); ``--plain-only`` skips the Ray path (for a machine
without Ray).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo's tests.helpers writes default shards


def plain_loop(job, batch_size: int, epochs: int, threads: int, device: str = "cpu") -> list[dict]:
    from data_pipeline.batch import iter_shard_batches
    from ray_jobs.runner import SpecialistRunner
    from specialists.model import SpecialistModel

    torch.set_num_threads(threads)
    runner = SpecialistRunner(SpecialistModel(job.model).to(device), job.recipe, device=device, log_every=0)
    files = job.train_files[0]

    out = []
    for _ in range(epochs):
        out.append(runner.train_epoch(iter_shard_batches(files, batch_size)))
        runner.epoch += 1
    return out


def bench_config(shards: str, args: argparse.Namespace, tmp: Path, s3_endpoint: str | None = None):
    """The one-specialist, one-stage train config the benchmark times (shards local or ``s3://``)."""
    from ray_jobs.config import TrainConfig

    pseudo = {"pseudo_fakes": {"method": args.pseudo_fakes, "ratio": 0.5}} if args.pseudo_fakes else {}
    cfg = TrainConfig(shards={"ffpp": shards}, storage_path=str(tmp / "runs"), name="bench", s3_endpoint=s3_endpoint,
                      specialists=[args.specialist], stages=["ffpp"], batch_size=args.batch_size,
                      stage_overrides={"ffpp": {"epochs": args.epochs, **pseudo}}, cpus_per_worker=float(args.threads),
                      balance_classes=args.balance, log_every=0, score_test=False, num_cpus=args.threads + 1,
                      use_gpu=args.device.startswith("cuda"), cache_shards=args.cache_shards,
                      prefetch_batches=args.prefetch)
    cfg.model.backbone = args.backbone
    cfg.model.allow_random_init = True  # a throughput benchmark: random weights on purpose
    return cfg


def ray_loop(job, cfg, storage, run_name: str) -> dict:
    """Time the train job's own ``TorchTrainer`` on ``job`` (epochs after the first): training
    samples/s, whole-epoch samples/s, the data-wait shares and the whole run's seconds."""
    from ray_jobs.trainer import build_trainer

    t = time.time()
    result = build_trainer(job, cfg, storage, run_name=run_name).fit()
    ray_s = time.time() - t
    df = result.metrics_dataframe.sort_values("epoch")
    later = df[df["epoch"] > 1]
    samples = later["train_samples"].sum()
    return {
        "samples_per_s": samples / (later["train_samples"] / later["train_samples_per_s"]).sum(),
        # whole epochs as the runner times them: training + validation
        "epoch_samples_per_s": samples / later["epoch_time_s"].sum(),
        "mean_epoch_s": later["epoch_time_s"].mean(),
        "data_wait": float((later["data_wait_frac"] * later["train_samples"]).sum() / samples),
        "step_wait": float((later["data_wait_step_frac"] * later["train_samples"]).sum() / samples),
        "first_batch_s": later["data_wait_first_s"].mean(),
        "run_s": ray_s,
    }


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--specialist", default="cm")
    ap.add_argument("--backbone", default="test_efficientnet")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n-train", type=int, default=768)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (one GPU per Ray worker, AMP)")
    ap.add_argument("--balance", action="store_true", help="TrainConfig.balance_classes for the Ray path")
    ap.add_argument("--cache-shards", action="store_true", help="TrainConfig.cache_shards for the Ray path")
    ap.add_argument("--prefetch", type=int, default=2, help="TrainConfig.prefetch_batches for the Ray path")
    ap.add_argument("--pseudo-fakes", metavar="METHOD",
                    help="the Ray path's stage makes pseudo-fakes (pseudo_fakes: {method: METHOD, ratio: 0.5})")
    ap.add_argument("--frames", choices=["uint8", "float", "both"], default="uint8",
                    help="TrainConfig.uint8_frames for the Ray path: uint8 to the device (default), "
                         "float32 from the prefetch threads, or both, one after the other")
    return ap


def main() -> None:
    ap = parser()
    ap.add_argument("--shards", help="a prepared shard folder (default: generated)")
    ap.add_argument("--plain-only", action="store_true", help="time the plain loop only (no Ray)")
    args = ap.parse_args()

    from ray_jobs.plan import plan

    tmp = Path(tempfile.mkdtemp(prefix="interceptor-bench-"))
    shards = args.shards
    if shards is None:
        from tests.helpers import write_learnable_shards

        shards = str(write_learnable_shards(tmp / "shards", n_train=args.n_train, size=args.size))
    cfg = bench_config(shards, args, tmp)
    storage, planned = plan(cfg)
    job = planned[0][1][0]

    t = time.time()
    plain = plain_loop(job, args.batch_size, args.epochs, args.threads, args.device)
    plain_s = time.time() - t
    plain_sps = (sum(m["train_samples"] for m in plain[1:])
                 / sum(m["train_samples"] / m["train_samples_per_s"] for m in plain[1:]))
    print(f"shards={shards} specialist={args.specialist} backbone={args.backbone} size={args.size} "
          f"batch={args.batch_size} device={args.device} threads={args.threads} epochs={args.epochs} "
          f"(first epoch excluded)")
    print(f"plain PyTorch loop : {plain_sps:8.1f} samples/s  (whole run {plain_s:.0f}s, "
          f"data wait {plain[-1]['data_wait_frac'] * 100:.1f}% of the last epoch)")
    if args.plain_only:
        return
    from ray_jobs.cluster import init_ray

    init_ray(None, cfg.num_cpus)
    for frames in (["uint8", "float"] if args.frames == "both" else [args.frames]):
        cfg.uint8_frames = frames == "uint8"
        r = ray_loop(job, cfg, storage, f"bench-{frames}")
        print(f"Ray Train + Data   : {r['samples_per_s']:8.1f} samples/s  frames={frames} cache_shards={args.cache_shards} "
              f"balance={args.balance} prefetch={args.prefetch} pseudo_fakes={args.pseudo_fakes}  (whole run incl. start-up {r['run_s']:.0f}s)")
        print(f"ratio Ray / plain  : {r['samples_per_s'] / plain_sps:.3f}   (target >= 0.9)")
        print(f"Ray whole epochs   : {r['epoch_samples_per_s']:8.1f} training samples per second of epoch wall time "
              f"(validation included; mean epoch {r['mean_epoch_s']:.1f}s)")
        print(f"Ray data-wait share: {r['data_wait'] * 100:.1f}% of step time   (target < 5%)")
        print(f"  of which          : {r['first_batch_s']:.2f}s per epoch for its first batch "
              f"(stream start, shuffle-buffer fill); {r['step_wait'] * 100:.1f}% of the time after it")


if __name__ == "__main__":
    main()
