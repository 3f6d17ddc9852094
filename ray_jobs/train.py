"""``interceptor train``: every selected specialist through the stage chain on Ray.

    python -m ray_jobs.train --config run.yaml [--set key=value ...]
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python -m ray_jobs.train --config run.yaml

All selected specialists train concurrently: a Ray Tune run whose trials (one per specialist)
each build and fit that specialist's ``TorchTrainer`` for every stage it still needs, in chain
order (Ray 2.60's pattern for several trainers at once). Each trainer streams the stage's shards with Ray Data, balances
classes while streaming, runs DDP across its workers (AMP on GPU), reports every epoch with a
checkpoint (rank 0 writes), keeps the best N by validation AUC and restarts failed workers from
the last checkpoint. Its workers also score the test split with the best-by-validation weights
(for the report only). When it ends, the best-by-validation checkpoint is exported to
``<storage>/<name>/final/<specialist>-<stage>/`` (see ``ray_jobs/storage.py``) and the
specialist's next stage initialises from that export.

Rerunning the same command skips every finished (specialist, stage); an unfinished one resumes
from its latest checkpoint in storage (Ray Train restores a run by its name), which for DFDC
means at the chunk where it stopped.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from data_pipeline.shards import list_complete_shards, parse_shard_name
from ray_jobs.config import ConfigError, StageChain, StageRecipe, apply_overrides, from_dict, load_yaml, to_dict
from ray_jobs.checkpoints import META_FILE
from ray_jobs.storage import COMPLETE_FILE, Storage, StorageError
from specialists.model import ModelConfig
from specialists.registry import SpecialistError, get_spec, list_specialists


@dataclass
class TrainConfig:
    """A training run: which specialists through which stages, on which shards, stored where."""

    shards: dict[str, str] = field(default_factory=dict)
    """Shard folder per dataset (``ffpp``, ``celebdf``, ``dfdc``), written by ``interceptor prepare``
    with that dataset's stage preprocessing. Must be visible to every node (local or NFS)."""
    storage_path: str = "runs"
    """Where runs, checkpoints and reports go: a local/NFS path or ``s3://bucket/prefix``."""
    s3_endpoint: str | None = None
    """Custom S3-compatible endpoint, e.g. ``http://127.0.0.1:9000`` (default: AWS or ``AWS_ENDPOINT_URL``)."""
    name: str = "interceptor"
    """Experiment name: the folder under ``storage_path``."""
    specialists: list[str] = field(default_factory=list)
    """Specialists to train (empty: every registered one)."""
    stages: list[str] = field(default_factory=list)
    """Stages to run, by name or seed alias (empty: the whole chain)."""
    stages_file: str | None = None
    """Stage chain file (default: the packaged ``ray_jobs/configs/stages.yaml``)."""
    stage_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per-stage recipe changes, e.g. ``{dfdc: {chunks: 2, epochs: 1}}`` (recorded in checkpoints)."""
    init_checkpoints: dict[str, str] = field(default_factory=dict)
    """Per-stage checkpoint folder to initialise from when the predecessor was not trained in this
    storage; ``{specialist}`` in the path is replaced by the specialist key."""
    from_sweep: str | None = None
    """Take each stage's lr / focal gamma / alpha from a finished sweep of that name (``interceptor tune``)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """Model template (backbone, weights file, widths); image size and clip length come from the shards."""
    batch_size: int = 32
    """Per-worker training batch size."""
    val_batch_size: int = 64
    """Per-worker validation batch size."""
    num_workers: int = 1
    """Ray Train workers (DDP ranks) per trainer."""
    use_gpu: bool = False
    """One GPU per worker (``gpus_per_worker``) and AMP."""
    cpus_per_worker: float = 1.0
    """CPUs reserved per training worker; leave some for Ray Data on small machines."""
    gpus_per_worker: float = 1.0
    """GPUs per worker when ``use_gpu``."""
    data_cpus: float = 0.25
    """CPUs per Ray Data task (shard reads)."""
    max_concurrent: int = 0
    """Specialists training at once, each through its stages (0: all selected specialists)."""
    cache_shards: bool = False
    """Read each trainer's Parquet shards once into Ray's object store (``materialize``) and stream
    every epoch from there, instead of re-reading and decoding the files each epoch. For shards
    that fit in the object store (the demo, small stages); leave off for full-size datasets."""
    prefetch_batches: int = 2
    """Batches each worker prepares ahead (``iter_torch_batches``); Ray Data converts them, class
    balancing included, in up to this many threads (capped at 4) while the step runs. On GPU
    nodes with CPUs to spare, 4 (measured on one H100, efficientnet_b4 at 224 px: 204 vs 174
    samples/s with 2)."""
    uint8_frames: bool = True
    """Stream clip frames to the training device as uint8 and turn them into float there (the
    runner does, on arrival): a quarter of the bytes through the prefetch queue, memory pinning
    and the host-to-device copy, and no float conversion on the CPU. False converts to float32
    in the prefetch threads."""
    shuffle_buffer: int = 256
    """Rows in each worker's local shuffle buffer."""
    balance_classes: bool = True
    """Resample the training stream so both classes are equally frequent (a streaming
    ``WeightedRandomSampler`` with replacement). The weighted-focal loss then weights both
    classes 1, since its weights would correct a label imbalance the stream no longer has."""
    seed: int = 0
    """Seeds the model's initialisation, dropout and augmentation draws, class balancing, and the
    data order: the order of shard files (or cached blocks) and each worker's local shuffle,
    both drawn anew every epoch from this seed and the epoch."""
    preserve_order: bool = False
    """Have Ray Data deliver blocks and batches in a fixed order (``preserve_order``), so that with
    the seeded shuffles a run trains on the same batches every time and reproduces its numbers
    (on the same hardware and worker count). Off by default: on large streamed datasets it can
    hold a fast read task behind a slow one."""
    keep_checkpoints: int = 2
    """Checkpoints kept per trainer, by best validation AUC (the latest is always kept too)."""
    checkpoint_every: int = 1
    """Report a checkpoint every this many epochs (0: only the ones below). Whatever it is, an
    epoch that improves the validation AUC, ends a DFDC chunk or ends the stage is checkpointed,
    so the best-by-validation model and every chunk boundary are always in storage. Larger values
    save a checkpoint write and upload per epoch, and redo more epochs after a failure."""
    max_failures: int = 2
    """Worker failures a trainer survives (restarting from its last checkpoint)."""
    log_every: int = 20
    """Print training progress every this many steps."""
    train_log_level: str = "INFO"
    """Level of Ray Train's own console logs (``RunConfig.logging_config``): ``WARNING`` hides its
    per-report and per-checkpoint lines; the runner's epoch lines and Ray Train's log files are
    unaffected."""
    address: str | None = None
    """Ray cluster to join (default: the job's cluster under ``ray job submit``, else a local Ray)."""
    num_cpus: int | None = None
    """CPUs of the local Ray started when no cluster is given (default: all)."""
    score_test: bool = True
    """Score each finished stage's test split for the report (never used for selection)."""

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: list[str] | None = None) -> "TrainConfig":
        cfg = from_dict(cls, load_yaml(path)) if path else cls()
        return apply_overrides(cfg, overrides or [])


@dataclass
class Job:
    """One (specialist, stage) to train: everything a trial needs, as plain data."""

    specialist: str
    recipe: StageRecipe
    model: ModelConfig
    train_files: list[list[str]]
    """Training shard files per chunk (one list for unchunked stages)."""
    val_files: list[str]
    test_files: list[str]
    class_counts: list[dict[int, int]]
    """Training label counts per chunk."""
    init_parts: list[str] | None
    """Storage parts of the checkpoint to initialise from (weights only), if any."""
    init_external: str | None = None
    """A local/NFS checkpoint folder to initialise from (``init_checkpoints``)."""

    @property
    def run_name(self) -> str:
        return f"{self.specialist}-{self.recipe.name}"


# ----------------------------------------------------------------------------------- planning

def _chain(cfg: TrainConfig) -> StageChain:
    chain = StageChain.load(cfg.stages_file)
    for name, changes in cfg.stage_overrides.items():
        stage = chain.get(name)
        chain = chain.with_stage(from_dict(StageRecipe, {**to_dict(stage), **changes}, f"stage_overrides.{name}"))
    return chain


def _sweep_hparams(storage: Storage, cfg: TrainConfig, stage: str, specialist: str) -> dict:
    if not cfg.from_sweep:
        return {}
    from ray_jobs.tune import best_config_parts

    parts = best_config_parts(cfg.name, cfg.from_sweep)
    if not storage.exists(*parts):
        raise ConfigError(f"from_sweep {cfg.from_sweep!r}: no finished sweep at {storage.display(*parts)}")
    best = storage.read_json(*parts)
    if best.get("stage") != stage:
        return {}
    return best.get("best", {}).get(specialist, {}).get("hparams", {})


def _count_labels(files: list[str]) -> dict[int, int]:
    counts: dict[int, int] = {0: 0, 1: 0}
    for f in files:
        labels = pq.read_table(f, columns=["label"]).column("label").to_numpy()
        for c, n in zip(*np.unique(labels, return_counts=True)):
            counts[int(c)] = counts.get(int(c), 0) + int(n)
    return counts


def _clip_shape(files: list[str]) -> tuple[int, int]:
    for f in files:
        t = pq.read_table(f, columns=["num_frames", "size"])
        if t.num_rows:
            return int(t.column("num_frames")[0].as_py()), int(t.column("size")[0].as_py())
    raise ConfigError(f"shards hold no clips: {files[0] if files else '(none)'}")


def final_parts(name: str, specialist: str, stage: str) -> tuple[str, ...]:
    """Storage parts of a (specialist, stage)'s exported final checkpoint (predictable name)."""
    return (name, "final", f"{specialist}-{stage}")


def is_complete(storage: Storage, name: str, specialist: str, stage: str) -> bool:
    return storage.exists(*final_parts(name, specialist, stage), COMPLETE_FILE)


def plan(cfg: TrainConfig, skip_complete: bool = True
         ) -> tuple[Storage, list[tuple[StageRecipe, list[Job], list[str]]]]:
    """Validate the run and list the work, before any worker starts.

    Returns the storage and, per stage in chain order, the jobs to train and the specialists
    skipped because they are already complete (none when ``skip_complete`` is false, as for a sweep
    of a stage the chain has already trained). Bad configs raise one-line ``ConfigError``s.
    """
    keys = cfg.specialists or list_specialists()
    for k in keys:
        get_spec(k)
    chain = _chain(cfg)
    stages = chain.select(cfg.stages)
    storage = Storage(cfg.storage_path, cfg.s3_endpoint)
    try:
        storage.check_writable(cfg.name)
    except StorageError as e:
        raise ConfigError(str(e)) from None
    if cfg.num_workers < 1 and cfg.use_gpu:
        raise ConfigError("use_gpu needs num_workers >= 1")
    if not isinstance(logging.getLevelName(str(cfg.train_log_level).upper()), int):
        raise ConfigError(f"train_log_level {cfg.train_log_level!r} is not a logging level (DEBUG, INFO, WARNING, ERROR)")
    planned = []
    trained_here = {s.name for s in stages}
    for stage in stages:
        folder = cfg.shards.get(stage.dataset)
        if not folder:
            raise ConfigError(f"stage {stage.name}: no shard folder given for dataset {stage.dataset!r} "
                              f"(set shards.{stage.dataset})")
        if not Path(folder).is_dir():
            raise ConfigError(f"stage {stage.name}: shard folder for {stage.dataset!r} not found: {folder}")
        train_all = [str(p) for p in list_complete_shards(folder, split="train")]
        val = [str(p) for p in list_complete_shards(folder, split="val")]
        test = [str(p) for p in list_complete_shards(folder, split="test")]
        if not train_all or not val:
            raise ConfigError(f"stage {stage.name}: {folder} has no complete train/val shards "
                              f"(run interceptor prepare first)")
        chunk_ids = sorted({parse_shard_name(p)["chunk"] or 0 for p in train_all})
        groups = [g for g in np.array_split(np.array(chunk_ids), min(stage.chunks, len(chunk_ids))) if len(g)]
        train_files = [[str(p) for p in list_complete_shards(folder, split="train", chunk=[int(c) for c in g])]
                       for g in groups] if stage.chunks > 1 else [train_all]
        if len(train_files) != stage.chunks:
            print(f"[plan] stage {stage.name}: {len(chunk_ids)} data chunk(s) for {stage.chunks} planned: "
                  f"training {len(train_files)} chunk(s)", file=sys.stderr)
            stage = stage.replace(chunks=len(train_files))
        num_frames, size = _clip_shape(train_all)
        counts = [_count_labels(files) for files in train_files]
        for i, c in enumerate(counts):
            if min(c.get(0, 0), c.get(1, 0)) == 0:
                raise ConfigError(f"stage {stage.name}: training chunk {i} lacks a class (label counts {c})")
        jobs, skipped = [], []
        for key in keys:
            if skip_complete and is_complete(storage, cfg.name, key, stage.name):
                skipped.append(key)
                continue
            init_parts, external = None, None
            if stage.init_from:
                prev = chain.get(stage.init_from).name
                if cfg.init_checkpoints.get(stage.name):
                    external = cfg.init_checkpoints[stage.name].replace("{specialist}", key)
                    if not Path(external).exists():
                        raise ConfigError(f"stage {stage.name}: init checkpoint {external} not found")
                elif prev in trained_here or is_complete(storage, cfg.name, key, prev):
                    init_parts = list(final_parts(cfg.name, key, prev))
                else:
                    raise ConfigError(
                        f"stage {stage.name}: its predecessor {prev!r} has no final checkpoint for {key!r} in "
                        f"{storage.display(cfg.name)} and no init_checkpoints.{stage.name} override")
            recipe = stage
            hp = _sweep_hparams(storage, cfg, stage.name, key)
            if hp:
                recipe = stage.replace(**hp)
            model = dataclasses.replace(cfg.model, specialist=key, image_size=size, num_frames=num_frames)
            jobs.append(Job(key, recipe, model, train_files, val, test, counts, init_parts, external))
        planned.append((stage, jobs, skipped))
    return storage, planned


# ----------------------------------------------------------------------------------- data

TRAIN_COLUMNS = ["frames", "num_frames", "size", "audio", "audio_shape", "has_audio", "label"]
TEST_COLUMNS = [*TRAIN_COLUMNS, "video_id"]
TEST_SCORES_FILE = "test_scores.json"


def configure_ray_data(preserve_order: bool = False) -> None:
    """Ray Data settings for this process' datasets: quiet progress, and the V1 Parquet reader,
    whose tasks honour ``data_cpus`` (V2's file-listing task asks for a whole CPU, which stalls
    on small machines where training workers hold fractional CPUs); ``preserve_order``: see
    :attr:`TrainConfig.preserve_order`."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.use_datasource_v2 = False
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.execution_options.preserve_order = preserve_order


def build_datasets(job: Job, cfg: TrainConfig) -> dict:
    import ray.data
    from ray.data import FileShuffleConfig, RandomSeedConfig

    configure_ray_data(cfg.preserve_order)
    read_args = {"num_cpus": cfg.data_cpus, "columns": TRAIN_COLUMNS}
    datasets = {}

    # seeded, and reseeded with every execution (epoch): another order each epoch, the same
    # orders in every run
    def read(files: list[str], shuffle: bool):
        if not cfg.cache_shards:
            return ray.data.read_parquet(files, shuffle=FileShuffleConfig(seed=cfg.seed) if shuffle else None,
                                         **read_args)
        ds = ray.data.read_parquet(files, **read_args).materialize()
        return ds.randomize_block_order(seed=RandomSeedConfig(seed=cfg.seed)) if shuffle else ds

    for i, files in enumerate(job.train_files):
        datasets[f"train_{i}"] = read(files, shuffle=True)  # class balancing: in the worker
    datasets["val"] = read(job.val_files, shuffle=False)
    return datasets


def test_summary(probs: np.ndarray, labels: np.ndarray, videos: np.ndarray) -> dict:
    """Test-split metrics of one model: clip level (``test_*``) and video level
    (``test_video_*``: the mean of a video's clip probabilities, how videos are scored in the field)."""
    import pandas as pd

    from specialists import metrics as M

    out = M.summary(probs, labels, prefix="test_")
    per_video = pd.DataFrame({"video": videos, "p": probs, "y": labels}).groupby("video").mean()
    out.update(M.summary(per_video["p"].to_numpy(), per_video["y"].to_numpy(), prefix="test_video_"))
    return out


def score_test_in_worker(runner, job: Job, cfg: TrainConfig, rank: int, world_size: int) -> dict | None:
    """Score the test split with the best-by-validation weights this worker kept.

    Each rank reads its share of the test shard files (Parquet, batch by batch: the shards are
    on storage every node sees, as for Ray Data's read tasks) and the results are gathered to
    every rank. ``None`` when this process has not seen the best epoch (it was restored after
    it): the driver then scores the exported checkpoint with a Ray Data job instead."""
    import torch
    from data_pipeline.shards import iter_shard_batches

    if runner.best is None:
        return None
    epoch, _, weights = runner.best
    runner.core.load_state_dict(weights)
    videos: list = []

    def tensors():
        for b in iter_shard_batches(job.test_files[rank::world_size], cfg.val_batch_size, TEST_COLUMNS,
                                    extras=("video_id",)):
            videos.extend(b["video_id"])
            yield b

    probs, labels = runner.predict(tensors())
    part = (probs.double().cpu().numpy(), labels.cpu().numpy(), np.asarray(videos, dtype=object))
    parts = [part]
    if world_size > 1:
        parts = [None] * world_size
        torch.distributed.all_gather_object(parts, part)
    probs, labels, videos_all = (np.concatenate([p[i] for p in parts]) for i in range(3))
    return {**test_summary(probs, labels, videos_all), "test_scored_epoch": epoch}


# ----------------------------------------------------------------------------------- worker loop

def checkpoint_due(history: list[dict], chunk_done: bool, total_epochs: int, every: int) -> bool:
    """Whether the epoch just ended (the last of ``history``) is checkpointed: when it improves
    the best validation AUC so far (ties do not), ends a chunk or the stage, or every ``every``
    epochs (0: never for that reason). The same on every rank: validation metrics are global."""
    from ray_jobs.runner import improves  # here: the runner pulls in torchmetrics, which the processes
    # that only plan or drive trainers (the driver, Tune trials) do not need

    epoch = history[-1]["epoch"]
    return improves(history) or chunk_done or epoch == total_epochs or (every > 0 and epoch % every == 0)


def quiet_train_report_logger(level: str) -> None:
    """Apply ``train_log_level`` to Ray Train's per-report line ("Reporting training result ...").
    Ray 2.60 names that module's logger by its file path, not ``ray.train...``, so the run's
    ``LoggingConfig`` does not reach it."""
    try:
        from ray.train.v2._internal.execution import context as train_context
    except ImportError:  # another Ray layout: nothing to adjust
        return
    logging.getLogger(train_context.__file__).setLevel(level.upper())


def train_loop_per_worker(config: dict) -> None:
    """Runs on every Ray Train worker: a thin wrapper around :class:`SpecialistRunner`."""
    import ray.train
    import ray.train.torch
    import torch

    from ray_jobs.checkpoints import build_payload, init_from, load_checkpoint, resume, save_checkpoint
    from ray_jobs.collate import ClipCollate, balance_rates
    from ray_jobs.runner import SpecialistRunner
    from ray_jobs.storage import fetch_checkpoint_dir, remove_local_copy
    from specialists.model import SpecialistModel

    job: Job = config["job"]
    cfg: TrainConfig = config["cfg"]
    storage: Storage = config["storage"]
    torch.set_num_threads(max(1, int(cfg.cpus_per_worker)))
    quiet_train_report_logger(cfg.train_log_level)
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    device = ray.train.torch.get_device() if cfg.use_gpu else torch.device("cpu")

    torch.manual_seed(cfg.seed)
    model = SpecialistModel(dataclasses.replace(job.model, weights_file=job.model.weights_file
                                                if job.recipe.init_from is None else None))
    restored = ray.train.get_checkpoint()
    init_source = job.init_external or (storage.display(*job.init_parts) if job.init_parts else None)
    if restored is None and (job.init_parts or job.init_external):
        local = Path(job.init_external) if job.init_external else fetch_checkpoint_dir(storage, *job.init_parts)
        try:
            init_from(model, load_checkpoint(local))
        finally:
            if job.init_parts:
                remove_local_copy(storage, local)
    model = ray.train.torch.prepare_model(model) if ctx.get_world_size() > 1 or cfg.use_gpu else model
    # weighted focal: class weights from the label mix the loss actually sees. Streaming with class
    # balancing already presents both classes equally often, so the weights are 1 then (weighting
    # on top of balanced sampling would bias towards the rarer class); without balancing they
    # come from the stage's training label counts (all chunks), as the seed did.
    counts = ({0: 1, 1: 1} if cfg.balance_classes else
              {c: sum(cc.get(c, 0) for cc in job.class_counts) for c in (0, 1)})
    runner = SpecialistRunner(model, job.recipe, device=device, class_counts=counts,
                              seed=cfg.seed, rank=rank, log_every=cfg.log_every, tag=job.run_name)
    if restored is not None:
        with restored.as_directory() as d:
            resume(runner, load_checkpoint(d))
        runner.log(f"resumed at epoch {runner.epoch}/{job.recipe.total_epochs} "
                   f"(chunk {runner.epoch // job.recipe.epochs + 1}/{job.recipe.chunks})")

    def batches(name: str, batch_size: int, shuffle: bool, rates: dict[int, float] | None = None):
        return ray.train.get_dataset_shard(name).iter_torch_batches(
            batch_size=batch_size, prefetch_batches=cfg.prefetch_batches, device=device,
            collate_fn=ClipCollate(rates, seed=(cfg.seed, runner.epoch, rank), uint8_frames=cfg.uint8_frames),
            pin_memory=cfg.use_gpu,
            local_shuffle_buffer_size=cfg.shuffle_buffer if shuffle else None,
            local_shuffle_seed=(cfg.seed * 100_003 + runner.epoch * 1_009 + rank) if shuffle else None)

    def train_batches(epoch: int):
        chunk = runner.chunk_of(epoch)
        if job.recipe.chunks > 1 and epoch % job.recipe.epochs == 0:
            runner.log(f"chunk {chunk + 1}/{job.recipe.chunks}: {len(job.train_files[chunk])} shard(s), "
                       f"labels {job.class_counts[chunk]}")
        rates = balance_rates(job.class_counts[chunk]) if cfg.balance_classes else None
        return batches(f"train_{chunk}", cfg.batch_size, shuffle=True, rates=rates)

    def on_epoch_end(metrics: dict) -> None:
        metrics = {**metrics, "specialist": job.specialist, "stage": job.recipe.name}
        save = checkpoint_due(runner.history, metrics["chunk_done"], job.recipe.total_epochs, cfg.checkpoint_every)
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if rank == 0 and save:
                payload = build_payload(runner.state_dict(), runner.core.config, job.recipe, metrics,
                                        extra={"run": job.run_name, "world_size": ctx.get_world_size(),
                                               "init_from": init_source})
                save_checkpoint(tmp, payload)
                checkpoint = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report({k: v for k, v in metrics.items() if isinstance(v, (int, float, str))},
                             checkpoint=checkpoint)

    val_cache: list[dict] = []

    def val_batches():
        if not cfg.cache_shards:
            return batches("val", cfg.val_batch_size, shuffle=False)
        # cached shards: the validation split is small and fixed, so keep its batches in the
        # worker after the first pass instead of starting a new streaming execution every epoch
        if not val_cache:
            val_cache.extend(batches("val", cfg.val_batch_size, shuffle=False))
        return val_cache

    scores_token = config.get("test_scores_token")
    runner.fit(train_batches, val_batches, on_epoch_end, keep_best=bool(scores_token))
    if scores_token:
        # the stage's test report, scored here while the model is loaded and the worker warm
        # (a separate Ray Data job per trainer costs a process start-up and a checkpoint reload)
        scores = score_test_in_worker(runner, job, cfg, rank, ctx.get_world_size())
        if rank == 0 and scores is not None:
            storage.write_json({**scores, "token": scores_token}, cfg.name, job.run_name, TEST_SCORES_FILE)
    runner.close()


# ----------------------------------------------------------------------------------- one trainer

def build_trainer(job: Job, cfg: TrainConfig, storage: Storage, run_name: str | None = None,
                  callbacks: list | None = None, test_scores_token: str | None = None):
    """The ``TorchTrainer`` of one job. ``test_scores_token``: workers also score the test split
    with the best-by-validation weights and rank 0 writes ``<name>/<run>/test_scores.json``
    tagged with this token (the chain's report; sweeps never pass it)."""
    from ray.data import ExecutionOptions
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    resources = {"CPU": cfg.cpus_per_worker}
    if cfg.use_gpu:
        resources["GPU"] = cfg.gpus_per_worker
    run_config = RunConfig(
        name=run_name or job.run_name,
        storage_path=storage.path(cfg.name),
        storage_filesystem=storage.filesystem if storage.is_s3 else None,
        checkpoint_config=CheckpointConfig(num_to_keep=cfg.keep_checkpoints,
                                           checkpoint_score_attribute="val_auc", checkpoint_score_order="max"),
        failure_config=FailureConfig(max_failures=cfg.max_failures),
        callbacks=callbacks or [],
        logging_config=LoggingConfig(log_level=cfg.train_log_level),
    )
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"job": job, "cfg": cfg, "storage": storage, "test_scores_token": test_scores_token},
        scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu,
                                     resources_per_worker=resources),
        datasets=build_datasets(job, cfg),
        # one worker streams whole datasets: no split coordinator (an actor per dataset) needed
        dataset_config=DataConfig(datasets_to_split="all" if cfg.num_workers > 1 else [],
                                  execution_options=ExecutionOptions(preserve_order=cfg.preserve_order)),
        run_config=run_config,
    )


def export_final(result, job: Job, cfg: TrainConfig, storage: Storage) -> dict:
    """Copy the best-by-validation checkpoint to the predictable final location, then mark it complete."""
    best = result.get_best_checkpoint(metric="val_auc", mode="max") or result.checkpoint
    if best is None:
        raise RuntimeError(f"{job.run_name}: training reported no checkpoint")
    metrics = next((m for c, m in (result.best_checkpoints or []) if c.path == best.path), result.metrics or {})
    parts = final_parts(cfg.name, job.specialist, job.recipe.name)
    storage.copy_in(best.path, best.filesystem, *parts)
    # the latest checkpoint carries the whole stage's per-epoch history, across restarts
    latest = result.checkpoint or best
    with latest.filesystem.open_input_stream(f"{latest.path}/{META_FILE}") as f:
        history = json.loads(f.read().decode()).get("history", [])
    return {"specialist": job.specialist, "stage": job.recipe.name, "checkpoint": storage.display(*parts),
            "selected_epoch": metrics.get("epoch"), "val_auc": metrics.get("val_auc"),
            "val_log_loss": metrics.get("val_log_loss"), "history": history,
            "recipe": to_dict(job.recipe)}


def score_test(job: Job, cfg: TrainConfig, storage: Storage) -> dict:
    """Score the exported final checkpoint on the test split with a Ray Data job."""
    from ray_jobs.scoring import score_shards

    scored = score_shards(storage, {job.specialist: final_parts(cfg.name, job.specialist, job.recipe.name)},
                          job.test_files, batch_size=cfg.val_batch_size, num_cpus=cfg.cpus_per_worker,
                          num_gpus=cfg.gpus_per_worker if cfg.use_gpu else 0.0, read_cpus=cfg.data_cpus)
    return test_summary(scored[f"prob_{job.specialist}"], scored["label"], scored["video_id"])


def run_job(job: Job, cfg: TrainConfig, storage: Storage, callbacks: list | None = None) -> dict:
    """Fit one (specialist, stage) trainer, export its final checkpoint, score its test split.

    The workers score the test split themselves with the weights they selected; the scores are
    used when they belong to the exported epoch, else (a worker restarted after its best epoch)
    the exported checkpoint is scored by :func:`score_test`."""
    start = time.time()
    token = uuid.uuid4().hex if cfg.score_test and job.test_files else None
    result = build_trainer(job, cfg, storage, callbacks=callbacks, test_scores_token=token).fit()
    if result.error:
        raise result.error
    report = export_final(result, job, cfg, storage)
    if token:
        scores_parts = (cfg.name, job.run_name, TEST_SCORES_FILE)
        scores = storage.read_json(*scores_parts) if storage.exists(*scores_parts) else {}
        if scores.get("token") == token and scores.get("test_scored_epoch") == report["selected_epoch"]:
            report.update({k: v for k, v in scores.items() if k != "token"})
        else:
            print(f"[train] {job.run_name}: scoring the exported epoch {report['selected_epoch']} on the test "
                  f"split (the workers scored epoch {scores.get('test_scored_epoch')})", flush=True)
            report.update(score_test(job, cfg, storage), test_scored_epoch=report["selected_epoch"])
    report["train_time_s"] = time.time() - start
    storage.write_json(report, *final_parts(cfg.name, job.specialist, job.recipe.name), COMPLETE_FILE)
    return report


def chain_trial(config: dict) -> None:
    """A Ray Tune trial of the chain: one specialist's trainers, stage after stage (each
    initialises from the previous one's export, which is complete when its ``run_job`` returns)."""
    from ray.tune.integration.ray_train import TuneReportCallback

    for job in config["jobs"]:
        run_job(job, config["cfg"], config["storage"], callbacks=[TuneReportCallback()])


# ----------------------------------------------------------------------------------- the chain

def train_specialists(chains: dict[str, list[Job]], cfg: TrainConfig, storage: Storage) -> None:
    """Train every specialist's remaining stages: one Ray Tune run whose trials (one per
    specialist) each drive that specialist's ``TorchTrainer``s in chain order, at most
    ``max_concurrent`` at once. Specialists do not wait for each other between stages, so a fast
    one is not held up by a slow one (nor are the CPUs left idle while the slowest finishes)."""
    from ray import tune

    concurrent = cfg.max_concurrent or len(chains)
    tuner = tune.Tuner(
        tune.with_resources(chain_trial, {"CPU": 0.01}),
        param_space={"jobs": tune.grid_search(list(chains.values())), "cfg": cfg, "storage": storage},
        # a trial's process is reused by the next trial: it has torch and Ray Train imported
        tune_config=tune.TuneConfig(max_concurrent_trials=concurrent, reuse_actors=True),
        run_config=tune.RunConfig(name=f"chain-{time.strftime('%Y%m%d-%H%M%S')}",
                                  storage_path=storage.path(cfg.name, "_tune"),
                                  storage_filesystem=storage.filesystem if storage.is_s3 else None,
                                  verbose=0),
    )
    results = tuner.fit()
    failed = [(r.config["jobs"][0].specialist, r.error) for r in results if r.error]
    if failed:
        raise RuntimeError(f"{len(failed)} specialist chain(s) failed ({', '.join(k for k, _ in failed)}); first: "
                           f"{str(failed[0][1]).strip().splitlines()[-1]}")


def collect_reports(storage: Storage, cfg: TrainConfig, planned) -> list[dict]:
    rows = []
    for stage, jobs, skipped in planned:
        for key in [j.specialist for j in jobs] + skipped:
            parts = final_parts(cfg.name, key, stage.name)
            if storage.exists(*parts, COMPLETE_FILE):
                rows.append(storage.read_json(*parts, COMPLETE_FILE))
    return rows


def format_report(rows: list[dict]) -> str:
    head = ("| specialist | stage | epoch | val AUC | val log loss | test clip AUC | test video AUC | "
            "test log loss | test acc real/fake |")
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        def f(k, fmt="{:.3f}"):
            v = r.get(k)
            return fmt.format(v) if isinstance(v, (int, float)) else "-"
        lines.append(f"| {r['specialist']} | {r['stage']} | {r.get('selected_epoch', '-')} | {f('val_auc')} | "
                     f"{f('val_log_loss')} | {f('test_auc')} | {f('test_video_auc')} | {f('test_log_loss')} | "
                     f"{f('test_acc_real')}/{f('test_acc_fake')} |")
    return "\n".join(lines)


def plot_curves(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = list(dict.fromkeys(r["stage"] for r in rows))
    fig, axes = plt.subplots(1, max(1, len(stages)), figsize=(5 * max(1, len(stages)), 4), squeeze=False)
    for ax, stage in zip(axes[0], stages):
        for r in rows:
            if r["stage"] == stage and r.get("history"):
                ep = [h["epoch"] for h in r["history"]]
                ax.plot(ep, [h["val_auc"] for h in r["history"]], marker="o", label=r["specialist"])
        ax.set(title=f"{stage}: validation AUC", xlabel="epoch", ylabel="AUC", ylim=(0.4, 1.01))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(storage: Storage, cfg: TrainConfig, rows: list[dict]) -> str:
    table = format_report(rows)
    storage.write_json({"rows": rows}, cfg.name, "reports", "train_report.json")
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "train_report.md").write_text(f"# Training report: {cfg.name}\n\n{table}\n")
        if rows:
            plot_curves(rows, Path(tmp) / "val_auc_curves.png")
        storage.upload_dir(tmp, cfg.name, "reports")
    return table


def train_chain(cfg: TrainConfig) -> list[dict]:
    """Validate, then train stage after stage; returns the report rows."""
    storage, planned = plan(cfg)
    from ray_jobs.cluster import init_ray

    init_ray(cfg.address, cfg.num_cpus)
    chains: dict[str, list[Job]] = {}
    for stage, jobs, skipped in planned:
        if skipped:
            print(f"[train] stage {stage.name}: already complete for {', '.join(skipped)} (skipped)", flush=True)
        if jobs:
            print(f"[train] stage {stage.name}: training {', '.join(j.specialist for j in jobs)} "
                  f"({stage.total_epochs} epoch(s), {stage.chunks} chunk(s), lr {jobs[0].recipe.lr:g})", flush=True)
        for job in jobs:
            chains.setdefault(job.specialist, []).append(job)
    if chains:
        train_specialists(chains, cfg, storage)
    rows = collect_reports(storage, cfg, planned)
    table = write_report(storage, cfg, rows)
    print(table, flush=True)
    print(f"[train] report: {storage.display(cfg.name, 'reports')}", flush=True)
    return rows


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="interceptor train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="run config YAML (see ray_jobs/configs/demo.yaml)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config field, e.g. --set num_workers=2 --set stage_overrides.dfdc.chunks=2")
    ap.add_argument("--specialists", nargs="+", help="specialists to train (default: all)")
    ap.add_argument("--stages", nargs="+", help="stages to run (default: the whole chain)")
    ap.add_argument("--storage-path", help="local path or s3://bucket/prefix")
    ap.add_argument("--s3-endpoint", help="custom S3 endpoint, e.g. http://127.0.0.1:9000")
    ap.add_argument("--name", help="experiment name")
    ap.add_argument("--from-sweep", help="use the best hyperparameters of this finished sweep")
    ap.add_argument("--address", help="Ray cluster address (default: local Ray / the job's cluster)")
    return ap


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    overrides = list(args.overrides)
    for flag, key in (("specialists", "specialists"), ("stages", "stages"), ("storage_path", "storage_path"),
                      ("s3_endpoint", "s3_endpoint"), ("name", "name"), ("from_sweep", "from_sweep"),
                      ("address", "address")):
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{key}={json.dumps(value)}")
    return TrainConfig.load(args.config, overrides)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = config_from_args(args)
        train_chain(cfg)
    except (ConfigError, SpecialistError, StorageError) as e:
        print(f"interceptor train: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
