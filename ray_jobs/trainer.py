"""One (specialist, stage) trainer: the ``TorchTrainer`` factory, the export of the stage's selected
checkpoint to its predictable final folder, and the test-split scores of the report."""

from __future__ import annotations

import json
import time
import uuid

from ray_jobs import layout
from ray_jobs.config import TrainConfig, to_dict
from ray_jobs.datasets import build_datasets
from ray_jobs.plan import Job
from ray_jobs.storage import Storage
from ray_jobs.worker import test_summary, train_fn_per_worker


def build_trainer(job: Job, cfg: TrainConfig, storage: Storage, run_name: str | None = None,
                  callbacks: list | None = None, test_scores_token: str | None = None):
    """The ``TorchTrainer`` of one job. ``test_scores_token``: workers also score the test split
    with the best-by-validation weights and rank 0 writes the run's ``test_scores.json``
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
        train_fn_per_worker,
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
    parts = layout.final_parts(cfg.name, job.specialist, job.recipe.name)
    storage.copy_in(best.path, best.filesystem, *parts)
    # the latest checkpoint carries the whole stage's per-epoch history, across restarts
    latest = result.checkpoint or best
    with latest.filesystem.open_input_stream(f"{latest.path}/{layout.META_FILE}") as f:
        history = json.loads(f.read().decode()).get("history", [])
    return {"specialist": job.specialist, "stage": job.recipe.name, "checkpoint": storage.display(*parts),
            "selected_epoch": metrics.get("epoch"), "val_auc": metrics.get("val_auc"),
            "val_log_loss": metrics.get("val_log_loss"), "history": history,
            "recipe": to_dict(job.recipe)}


def score_test(job: Job, cfg: TrainConfig, storage: Storage) -> dict:
    """Score the exported final checkpoint on the test split with a Ray Data job."""
    from ray_jobs.scoring import score_shards

    scored = score_shards(storage, {job.specialist: layout.final_parts(cfg.name, job.specialist, job.recipe.name)},
                          job.test_files, batch_size=cfg.val_batch_size, num_cpus=cfg.cpus_per_worker,
                          num_gpus=cfg.gpus_per_worker if cfg.use_gpu else 0.0, read_cpus=cfg.data_cpus)
    return test_summary(scored[f"prob_{job.specialist}"], scored["label"], scored["video_id"], scored["face_index"])


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
        scores_parts = layout.test_scores_parts(cfg.name, job.specialist, job.recipe.name)
        scores = storage.read_json(*scores_parts) if storage.exists(*scores_parts) else {}
        if scores.get("token") == token and scores.get("test_scored_epoch") == report["selected_epoch"]:
            report.update({k: v for k, v in scores.items() if k != "token"})
        else:
            print(f"[train] {job.run_name}: scoring the exported epoch {report['selected_epoch']} on the test "
                  f"split (the workers scored epoch {scores.get('test_scored_epoch')})", flush=True)
            report.update(score_test(job, cfg, storage), test_scored_epoch=report["selected_epoch"])
    report["train_time_s"] = time.time() - start
    storage.write_json(report, *layout.final_parts(cfg.name, job.specialist, job.recipe.name), layout.COMPLETE_FILE)
    return report
