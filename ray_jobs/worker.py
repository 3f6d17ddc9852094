"""What runs on every Ray Train worker: :func:`train_fn_per_worker`, a thin wrapper around
:class:`~ray_jobs.runner.SpecialistRunner` (which knows nothing of Ray).

The worker builds the model (initialised from the previous stage's export, or resumed from the
run's last checkpoint after a failure), feeds the runner batches from its Ray Data shards, reports
every epoch to Ray Train with a checkpoint when one is due (rank 0 writes it), and at the end scores
the test split with the best-by-validation weights it kept (for the report only).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ray_jobs import layout
from ray_jobs.config import TrainConfig
from ray_jobs.datasets import TEST_COLUMNS
from ray_jobs.plan import Job
from ray_jobs.storage import Storage


def test_summary(probs: np.ndarray, labels: np.ndarray, videos: np.ndarray, faces: np.ndarray | None = None) -> dict:
    """Test-split metrics of one model: clip level (``test_*``) and video level (``test_video_*``:
    each face's clip probabilities averaged, then the video's maximum over its faces, as the DFDC
    winner scored videos; a video is fake when any face is)."""
    import pandas as pd

    from specialists import metrics as M

    out = M.summary(probs, labels, prefix="test_")
    faces = np.zeros(len(videos), dtype=np.int64) if faces is None else faces
    per_face = pd.DataFrame({"video": videos, "face": faces, "p": probs, "y": labels}).groupby(["video", "face"]).mean()
    per_video = per_face.groupby(level="video").max()
    out.update(M.summary(per_video["p"].to_numpy(), per_video["y"].to_numpy(), prefix="test_video_"))
    return out


def score_test_in_worker(runner, job: Job, cfg: TrainConfig, rank: int, world_size: int) -> dict | None:
    """Score the test split with the best-by-validation weights this worker kept.

    Each rank reads its share of the test shard files (Parquet, batch by batch: the shards are
    on storage every node sees, as for Ray Data's read tasks) and the results are gathered to
    every rank. ``None`` when this process has not seen the best epoch (it was restored after
    it): the driver then scores the exported checkpoint with a Ray Data job instead."""
    import torch

    from data_pipeline.batch import iter_shard_batches

    if runner.best is None:
        return None
    epoch, _, weights = runner.best
    runner.core.load_state_dict(weights)
    videos: list = []
    faces: list = []

    def tensors():
        for b in iter_shard_batches(job.test_files[rank::world_size], cfg.val_batch_size, TEST_COLUMNS,
                                    extras=("video_id", "face_index"), endpoint=cfg.s3_endpoint):
            videos.extend(b["video_id"])
            faces.extend(b["face_index"])
            yield b

    probs, labels = runner.predict(tensors())
    part = (probs.double().cpu().numpy(), labels.cpu().numpy(), np.asarray(videos, dtype=object),
            np.asarray(faces, dtype=np.int64))
    parts = [part]
    if world_size > 1:
        parts = [None] * world_size
        torch.distributed.all_gather_object(parts, part)
    probs, labels, videos_all, faces_all = (np.concatenate([p[i] for p in parts]) for i in range(4))
    return {**test_summary(probs, labels, videos_all, faces_all), "test_scored_epoch": epoch}


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


# ----------------------------------------------------------------------------------- named steps

@contextlib.contextmanager
def local_weights_file(location: str | None, endpoint: str | None):
    """A local path of the backbone weights file: an ``s3://`` one is fetched to a temporary file
    (through the run's ``s3_endpoint``, credentials from this node's own chain), removed after."""
    from data_pipeline.filesystems import is_s3, resolve
    from specialists.registry import SpecialistError

    if location is None or not is_s3(location):
        yield location
        return
    fs, path = resolve(location, endpoint)
    with tempfile.TemporaryDirectory(prefix="interceptor-weights-") as tmp:
        local = Path(tmp) / path.rsplit("/", 1)[-1]  # the name kept: timm reads .safetensors by its suffix
        try:
            with fs.open_input_stream(path) as src, local.open("wb") as dst:
                shutil.copyfileobj(src, dst, length=8 << 20)
        except OSError as e:
            raise SpecialistError(f"backbone weights {location}: cannot be read "
                                  f"({(str(e).strip().splitlines() or [type(e).__name__])[0]})") from None
        yield str(local)


def build_model(job: Job, storage: Storage, restored: Any):
    """The specialist, initialised from the predecessor's export unless a checkpoint of this run
    will be restored (a restart), in which case its weights come from there. Backbone weights
    (``weights_file``, ``pretrained``) are read only where nothing overwrites them: a chain's first
    stage, not restarted."""
    from ray_jobs.checkpoints import init_from, load_checkpoint
    from ray_jobs.storage import fetch_checkpoint_dir, remove_local_copy
    from specialists.model import SpecialistModel

    fresh = restored is None and job.recipe.init_from is None
    with local_weights_file(job.model.weights_file if fresh else None, storage.endpoint) as weights_file:
        model = SpecialistModel(dataclasses.replace(job.model, weights_file=weights_file,
                                                    pretrained=fresh and job.model.pretrained))
    if restored is None and (job.init_parts or job.init_external):
        local = Path(job.init_external) if job.init_external else fetch_checkpoint_dir(storage, *job.init_parts)
        try:
            init_from(model, load_checkpoint(local))
        finally:
            if job.init_parts:
                remove_local_copy(storage, local)
    return model


def build_runner(model, job: Job, cfg: TrainConfig, device, rank: int, restored: Any):
    """The runner around the (possibly DDP-wrapped) model, resumed from ``restored`` if given."""
    from ray_jobs.checkpoints import load_checkpoint, resume
    from ray_jobs.runner import SpecialistRunner

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
    return runner


class WorkerBatches:
    """The runner's batches from this worker's Ray Data shards: seeded per (seed, epoch, rank),
    class-balanced per chunk, validation kept in memory when the shards are cached."""

    def __init__(self, runner, job: Job, cfg: TrainConfig, device, rank: int):
        self.runner, self.job, self.cfg, self.device, self.rank = runner, job, cfg, device, rank
        self.val_cache: list[dict] = []

    def stream(self, name: str, batch_size: int, shuffle: bool, rates: dict[int, float] | None = None,
               pseudo_fakes=None):
        import ray.train

        from ray_jobs.collate import ClipCollate

        cfg, epoch = self.cfg, self.runner.epoch
        return ray.train.get_dataset_shard(name).iter_torch_batches(
            batch_size=batch_size, prefetch_batches=cfg.prefetch_batches, device=self.device,
            collate_fn=ClipCollate(rates, seed=(cfg.seed, epoch, self.rank), uint8_frames=cfg.uint8_frames,
                                   pseudo_fakes=pseudo_fakes),
            pin_memory=cfg.use_gpu,
            local_shuffle_buffer_size=cfg.shuffle_buffer if shuffle else None,
            local_shuffle_seed=(cfg.seed * 100_003 + epoch * 1_009 + self.rank) if shuffle else None)

    def train(self, epoch: int):
        from ray_jobs.collate import balance_rates

        job, chunk = self.job, self.runner.chunk_of(epoch)
        if job.recipe.chunks > 1 and epoch % job.recipe.epochs == 0:
            self.runner.log(f"chunk {chunk + 1}/{job.recipe.chunks}: {len(job.train_files[chunk])} shard(s), "
                            f"labels {job.class_counts[chunk]}")
        rates = balance_rates(job.class_counts[chunk]) if self.cfg.balance_classes else None
        pseudo = job.recipe.pseudo_fakes
        if pseudo is not None:  # what this specialist can learn from (av_shift: only with sync curves)
            pseudo = pseudo.for_model(self.runner.core.spec.uses_sync)
        return self.stream(f"train_{chunk}", self.cfg.batch_size, shuffle=True, rates=rates, pseudo_fakes=pseudo)

    def val(self):
        if not self.cfg.cache_shards:
            return self.stream("val", self.cfg.val_batch_size, shuffle=False)
        # cached shards: the validation split is small and fixed, so keep its batches in the
        # worker after the first pass instead of starting a new streaming execution every epoch
        if not self.val_cache:
            self.val_cache.extend(self.stream("val", self.cfg.val_batch_size, shuffle=False))
        return self.val_cache


def worker_nodes(node: str, world_size: int) -> list[str]:
    """The Ray node id of every rank, in rank order (gathered when there are several)."""
    if world_size == 1:
        return [node]
    import torch

    nodes: list = [None] * world_size
    torch.distributed.all_gather_object(nodes, node)
    return nodes


def report_epoch(runner, job: Job, cfg: TrainConfig, rank: int, world_size: int, init_source: str | None,
                 metrics: dict) -> None:
    """Report an epoch's metrics to Ray Train, with a checkpoint (written by rank 0) when one is due."""
    import ray.train

    from ray_jobs.checkpoints import build_payload, save_checkpoint

    metrics = {**metrics, "specialist": job.specialist, "stage": job.recipe.name}
    save = checkpoint_due(runner.history, metrics["chunk_done"], job.recipe.total_epochs, cfg.checkpoint_every)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if rank == 0 and save:
            payload = build_payload(runner.state_dict(), runner.core.config, job.recipe, metrics,
                                    extra={"run": job.run_name, "world_size": world_size,
                                           "init_from": init_source, "hold_out": list(job.hold_out),
                                           "trained_methods": None if job.trained_methods is None
                                           else list(job.trained_methods)})
            save_checkpoint(tmp, payload)
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report({k: v for k, v in metrics.items() if isinstance(v, (int, float, str))},
                         checkpoint=checkpoint)


# ----------------------------------------------------------------------------------- the worker

def train_fn_per_worker(config: dict) -> None:
    """Runs on every Ray Train worker: build (or resume) the model, fit it, score the test split."""
    import ray
    import ray.train
    import ray.train.torch
    import torch

    job: Job = config["job"]
    cfg: TrainConfig = config["cfg"]
    storage: Storage = config["storage"]
    torch.set_num_threads(max(1, int(cfg.cpus_per_worker)))
    quiet_train_report_logger(cfg.train_log_level)
    ctx = ray.train.get_context()
    rank, world_size = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device() if cfg.use_gpu else torch.device("cpu")

    torch.manual_seed(cfg.seed)
    restored = ray.train.get_checkpoint()
    init_source = job.init_external or (storage.display(*job.init_parts) if job.init_parts else None)
    model = build_model(job, storage, restored)
    model = ray.train.torch.prepare_model(model) if world_size > 1 or cfg.use_gpu else model
    runner = build_runner(model, job, cfg, device, rank, restored)
    batches = WorkerBatches(runner, job, cfg, device, rank)

    node = ray.get_runtime_context().get_node_id()

    def on_epoch_end(metrics: dict) -> None:
        # where each epoch ran, kept in the stage's history: on a cluster whose nodes come and go
        # it shows where a restarted trainer went on
        runner.history[-1]["nodes"] = worker_nodes(node, world_size)
        report_epoch(runner, job, cfg, rank, world_size, init_source, metrics)

    scores_token = config.get("test_scores_token")
    runner.fit(batches.train, batches.val, on_epoch_end, keep_best=bool(scores_token))
    if scores_token:
        # the stage's test report, scored here while the model is loaded and the worker warm
        # (a separate Ray Data job per trainer costs a process start-up and a checkpoint reload)
        scores = score_test_in_worker(runner, job, cfg, rank, world_size)
        if rank == 0 and scores is not None:
            storage.write_json({**scores, "token": scores_token},
                               *layout.test_scores_parts(cfg.name, job.specialist, job.recipe.name))
    runner.close()
