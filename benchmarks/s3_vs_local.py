"""Data in S3 (a moto server on loopback) against the same data on local disk, one run each:
``prepare`` (videos -> shards) and the train data loop (Ray Data streaming the shards).

    python benchmarks/s3_vs_local.py [--scale small] [--dataset ffpp] [--num-cpus 2 1] [--json out.json]

1. Videos: a synthetic benchmark (``--scale``) generated locally, then uploaded to the bucket.
2. ``prepare``: ``ray_jobs.sharding.run`` from the local root into a local folder, then from the
   bucket into the bucket (videos decoded from the objects by ranged reads, shards uploaded as
   whole objects), each on a fresh local Ray (start-up not counted: ``prepare_throughput``'s timing).
   Where the difference goes: the manifest (listing + metadata reads), fetching every video's bytes
   (one process, in order) and writing the shards, each timed alone on both sides, and the CPU time
   the loopback S3 server (moto, a Python process) takes from the same cores. With ``--num-cpus``
   1 the workers get one core and the server the other, as with a real, remote S3.
3. Train data loop: the learnable shards of ``train_throughput`` (``--n-train`` clips of ``--size``
   px) written locally and to the bucket; Ray Data's ingest alone (``read_parquet`` +
   ``iter_batches``, second pass timed) and the train job's own ``TorchTrainer`` loop
   (``train_throughput.ray_loop``: samples/s after the first epoch, data-wait share).

Prints the rates and the ratios S3 / local (targets: prepare >= 0.8, train >= 0.9). Credentials are
the fixed test values moto accepts, set in this process' environment (the local Ray inherits them).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

import prepare_throughput  # noqa: E402
import train_throughput  # noqa: E402

BUCKET = "bench"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret", "AWS_DEFAULT_REGION": "us-east-1",
               "AWS_EC2_METADATA_DISABLED": "true"}


def start_moto() -> tuple[subprocess.Popen, str]:
    """A moto S3 server on a free loopback port, with the benchmark's bucket."""
    import boto3

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(200):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.2)
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=BUCKET)
    return proc, endpoint


def timed(fn, *args, **kwargs) -> tuple[object, float]:
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t


# ----------------------------------------------------------------------------------- prepare

def where_prepare_time_goes(root: str, out: str, endpoint: str | None, dataset: str) -> dict:
    """Seconds of the I/O parts of a preparation, each alone: the manifest, every video's bytes
    through the decoder's file object (one process, in order), and writing the shards' bytes
    atomically again (under other names)."""
    from data_pipeline.filesystems import open_input, write_atomic
    from data_pipeline.shards import list_complete_shards
    from data_pipeline.sources import read_manifest

    manifest, manifest_s = timed(read_manifest, dataset, root, endpoint)
    t = time.perf_counter()
    size = 0
    for row in manifest:
        with open_input(row.path, endpoint) as f:
            while chunk := f.read(1 << 20):
                size += len(chunk)
    fetch_s = time.perf_counter() - t
    shards = list_complete_shards(out, endpoint=endpoint)
    payloads = [p.read_bytes() for p in shards]
    t = time.perf_counter()
    for p, payload in zip(shards, payloads):
        write_atomic(p.fs, (p.parent / ("rewrite-" + p.name)).path, payload)
    write_s = time.perf_counter() - t
    return {"manifest_s": manifest_s, "videos": len(manifest), "video_mb": size / 1e6, "fetch_s": fetch_s,
            "shards": len(shards), "shard_mb": sum(map(len, payloads)) / 1e6, "write_s": write_s}


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_prepare(args: argparse.Namespace, tmp: Path, endpoint: str, moto_pid: int, num_cpus: int) -> dict:
    """Local and S3 preparation on ``num_cpus`` CPUs; the S3 server's CPU time during the S3 run."""
    import pyarrow.fs as pafs

    from data_pipeline.filesystems import FsPath
    from ray_jobs.sharding import PrepareConfig

    pargs = prepare_throughput._parse_args(["--scale", args.scale, "--dataset", args.dataset, "--size", str(args.size)])
    local_root = tmp / "bench" / args.dataset
    if not local_root.is_dir():
        prepare_throughput._dataset_root(pargs, tmp)
    remote = FsPath.of(f"s3://{BUCKET}/videos/{args.dataset}", endpoint)
    if not remote.is_dir():
        pafs.copy_files(str(local_root), remote.path, destination_filesystem=remote.fs)
    out = {"num_cpus": num_cpus}
    for where, root, dest, ep in (("local", str(local_root), str(tmp / f"shards-{num_cpus}"), None),
                                  ("s3", str(remote), f"s3://{BUCKET}/shards-{num_cpus}/{args.dataset}", endpoint)):
        cfg = PrepareConfig(dataset=args.dataset, size=args.size, num_cpus=num_cpus, root=root, out=dest, s3_endpoint=ep)
        server_cpu = cpu_seconds(moto_pid)
        summary, init_s, prep_s = prepare_throughput._time_preparation(cfg, num_cpus)
        frames = summary["clips"] * cfg.clip_len
        out[where] = {"frames": frames, "seconds": prep_s, "frames_per_s": frames / prep_s, "ray_init_s": init_s,
                      "videos": summary["videos"]["used"], "server_cpu_s": cpu_seconds(moto_pid) - server_cpu,
                      **where_prepare_time_goes(root, dest, ep, args.dataset)}
    out["ratio"] = out["s3"]["frames_per_s"] / out["local"]["frames_per_s"]
    return out


# ----------------------------------------------------------------------------------- train

def ingest(files: list[str], endpoint: str | None, batch_size: int) -> dict:
    """Ray Data alone: read the shards' model columns and iterate batches (second pass timed)."""
    import ray.data

    from ray_jobs.datasets import TRAIN_COLUMNS, configure_ray_data, parquet_source

    configure_ray_data()
    ds = ray.data.read_parquet(**parquet_source(files, endpoint), columns=TRAIN_COLUMNS, num_cpus=0.25)
    rows = 0
    for _ in range(2):
        t = time.perf_counter()
        rows = sum(len(b["label"]) for b in ds.iter_batches(batch_size=batch_size, batch_format="numpy"))
        seconds = time.perf_counter() - t
    return {"clips": rows, "seconds": seconds, "clips_per_s": rows / seconds}


def bench_train(args: argparse.Namespace, tmp: Path, endpoint: str, moto_pid: int) -> dict:
    from ray_jobs.cluster import init_ray
    from ray_jobs.plan import plan
    from tests.helpers import write_learnable_shards

    targs = train_throughput.parser().parse_args(["--epochs", str(args.epochs), "--n-train", str(args.n_train),
                                                  "--size", str(args.train_size), "--threads", "1"])
    out = {}
    for where, shards, ep in (("local", str(tmp / "train-shards"), None), ("s3", f"s3://{BUCKET}/train-shards", endpoint)):
        write_learnable_shards(shards, n_train=args.n_train, size=args.train_size, endpoint=ep)
        cfg = train_throughput.bench_config(shards, targs, tmp / where, s3_endpoint=ep)
        storage, planned = plan(cfg)
        job = planned[0][1][0]
        init_ray(None, cfg.num_cpus)
        server_cpu = cpu_seconds(moto_pid)
        out[where] = {"ingest": ingest(job.train_files[0], ep, targs.batch_size),
                      "loop": train_throughput.ray_loop(job, cfg, storage, f"bench-{where}")}
        out[where]["server_cpu_s"] = cpu_seconds(moto_pid) - server_cpu
    out["ingest_ratio"] = out["s3"]["ingest"]["clips_per_s"] / out["local"]["ingest"]["clips_per_s"]
    out["ratio"] = out["s3"]["loop"]["samples_per_s"] / out["local"]["loop"]["samples_per_s"]
    return out


def report(preps: list[dict], train: dict) -> str:
    lines = []
    for prep in preps:
        lines.append(f"prepare (videos -> shards), {prep['num_cpus']} CPU(s) for the workers:")
        for where in ("local", "s3"):
            r = prep[where]
            lines.append(f"  {where:5s}: {r['frames']} clip frames of {r['videos']} videos in {r['seconds']:.1f} s = "
                         f"{r['frames_per_s']:.0f} frames/s; S3 server CPU {r['server_cpu_s']:.1f} s")
            lines.append(f"         alone: manifest {r['manifest_s']:.2f} s, fetching {r['video_mb']:.1f} MB of videos "
                         f"{r['fetch_s']:.2f} s, writing {r['shards']} shards ({r['shard_mb']:.0f} MB) {r['write_s']:.2f} s")
        lines.append(f"  ratio s3/local = {prep['ratio']:.3f} (target >= 0.8)")
    if train:
        lines.append("train data loop (Ray Data streaming the shards):")
        for where in ("local", "s3"):
            i, loop = train[where]["ingest"], train[where]["loop"]
            lines.append(f"  {where:5s}: ingest alone {i['clips_per_s']:.0f} clips/s ({i['clips']} clips in {i['seconds']:.2f} s); "
                         f"train loop {loop['samples_per_s']:.1f} samples/s, data wait {loop['data_wait'] * 100:.1f}% of "
                         f"step time (first batch {loop['first_batch_s']:.2f} s/epoch); S3 server CPU "
                         f"{train[where]['server_cpu_s']:.1f} s")
        lines.append(f"  ratio s3/local: ingest {train['ingest_ratio']:.3f}, train loop {train['ratio']:.3f} (target >= 0.9)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", default="small", help="synthetic scale of the prepare benchmark")
    ap.add_argument("--dataset", default="ffpp")
    ap.add_argument("--num-cpus", type=int, nargs="+", default=[os.cpu_count() or 1, 1],
                    help="CPUs of the preparation's local Ray, one comparison each (default: all, then 1: the "
                         "loopback S3 server then has a core of its own, as a real one would)")
    ap.add_argument("--size", type=int, default=224, help="prepare's face crop side")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--n-train", type=int, default=768)
    ap.add_argument("--train-size", type=int, default=64, help="clip side of the training shards")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--json", help="also write the numbers to this JSON file")
    args = ap.parse_args(argv)
    os.environ.update(CREDENTIALS)
    proc, endpoint = start_moto()
    try:
        with tempfile.TemporaryDirectory(prefix="s3-bench-") as tmp:
            preps = [bench_prepare(args, Path(tmp), endpoint, proc.pid, n) for n in args.num_cpus]
            train = {} if args.skip_train else bench_train(args, Path(tmp), endpoint, proc.pid)
    finally:
        import ray

        ray.shutdown()
        proc.terminate()
        proc.wait(timeout=30)
    print(report(preps, train))
    if args.json:
        Path(args.json).write_text(json.dumps({"prepare": preps, "train": train}, indent=2, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
