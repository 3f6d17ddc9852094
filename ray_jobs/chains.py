"""Every selected specialist through its remaining stages, concurrently: ``interceptor train``'s work.

One Ray Tune run whose trials (one per specialist) each drive that specialist's ``TorchTrainer``s
in chain order (Ray 2.60's pattern for several trainers at once); each stage initialises from the
previous stage's export, which is complete when its trainer returns. Afterwards the stages' reports
are collected from storage into the run's report.
"""

from __future__ import annotations

import time

from ray_jobs import layout
from ray_jobs.config import TrainConfig
from ray_jobs.plan import Job, is_complete, plan
from ray_jobs.reports import write_train_report
from ray_jobs.storage import Storage
from ray_jobs.trainer import run_job


def chain_trial(config: dict) -> None:
    """A Ray Tune trial of the chain: one specialist's trainers, stage after stage (each
    initialises from the previous one's export, which is complete when its ``run_job`` returns).

    A trial whose node died is retried (on the nodes left): it passes over the stages already
    complete in storage, and the interrupted stage's trainer, which keeps its run name, resumes
    from its last registered checkpoint."""
    from ray.tune.integration.ray_train import TuneReportCallback

    cfg, storage = config["cfg"], config["storage"]
    for job in config["jobs"]:
        if is_complete(storage, cfg.name, job.specialist, job.recipe.name):
            print(f"[train] {job.run_name}: complete in storage (a retried chain): not trained again", flush=True)
            continue
        run_job(job, cfg, storage, callbacks=[TuneReportCallback()])


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
                                  storage_path=storage.path(*layout.chain_tune_parts(cfg.name)),
                                  storage_filesystem=storage.filesystem if storage.is_s3 else None,
                                  # a chain driver lost with its node (preemption) is started again
                                  failure_config=tune.FailureConfig(max_failures=cfg.max_failures),
                                  verbose=0),
    )
    results = tuner.fit()
    failed = [(r.config["jobs"][0].specialist, r.error) for r in results if r.error]
    if failed:
        raise RuntimeError(f"{len(failed)} specialist chain(s) failed ({', '.join(k for k, _ in failed)}); first: "
                           f"{str(failed[0][1]).strip().splitlines()[-1]}")


def collect_reports(storage: Storage, cfg: TrainConfig, planned) -> list[dict]:
    """The ``COMPLETE.json`` report of every planned (specialist, stage) that is done, in plan order."""
    rows = []
    for stage, jobs, skipped in planned:
        for key in [j.specialist for j in jobs] + skipped:
            parts = layout.final_parts(cfg.name, key, stage.name)
            if storage.exists(*parts, layout.COMPLETE_FILE):
                rows.append(storage.read_json(*parts, layout.COMPLETE_FILE))
    return rows


def train_chain(cfg: TrainConfig) -> list[dict]:
    """Validate, then train every specialist's remaining stages; returns the report rows."""
    from ray_jobs.cluster import init_ray

    storage, planned = plan(cfg)
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
    table = write_train_report(storage, cfg.name, rows)
    print(table, flush=True)
    print(f"[train] report: {storage.display(*layout.reports_parts(cfg.name))}", flush=True)
    return rows
