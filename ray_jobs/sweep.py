"""Ray Tune sweeps of a stage's learning rate and focal-loss gamma / alpha: the work of ``interceptor tune``.

One Ray Tune experiment sweeps every chosen specialist at once, sampling the
:class:`~ray_jobs.sweep_config.SearchSpace` for each. Each trial is one ``TorchTrainer`` built
exactly as the chain builds it (``plan`` -> ``Job`` -> ``build_trainer``) for the trial's specialist
(``config["specialist"]``), with the job's recipe replaced by the trial's values; the trainer's
per-epoch reports reach Tune through ``TuneReportCallback``. Trials of all specialists share one cap,
``max_concurrent`` (Tune's ``max_concurrent_trials``); per specialist, ASHA stops poor trials early
and Optuna's TPE (or random search) proposes the values (:mod:`ray_jobs.sweep_search`). Rerunning a
sweep resumes it (``Tuner.restore``); the storage layout is :mod:`ray_jobs.layout`'s.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray import tune

from ray_jobs import layout
from ray_jobs.cluster import init_ray
from ray_jobs.config import ConfigError, StageRecipe, TrainConfig, to_dict
from ray_jobs.plan import Job, plan
from ray_jobs.reports import format_sweep_summary, plot_trials
from ray_jobs.storage import Storage
from ray_jobs.sweep_config import (
    HPARAMS,
    METRIC,
    MODE,
    ResolvedSpace,
    SweepConfig,
    check_settings,
    resolve_search,
    resolve_space,
)
from ray_jobs.sweep_search import SPECIALIST, RandomSearch, SpecialistASHA, SpecialistSearch
from ray_jobs.trainer import build_trainer


def trial_dirname(trial: Any) -> str:
    """Tune trial folders are named by trial id (stable across restores)."""
    return str(trial.trial_id)


def _read_best(sp: "SweepPlan") -> dict:
    """The sweep's ``best.json`` so far ({} before the first specialist is done)."""
    parts = sp.parts(layout.BEST_FILE)
    return sp.storage.read_json(*parts) if sp.storage.exists(*parts) else {}


@dataclass(frozen=True)
class TrialContext:
    """What every trial of a sweep shares (passed with ``tune.with_parameters``): each
    specialist's job, by specialist."""

    jobs: dict[str, Job]
    cfg: TrainConfig
    storage: Storage
    sweep: str


def _clean(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _history(rows: list[dict]) -> list[dict]:
    """Per-epoch metrics, one row per epoch (the last report wins after a restart), epoch order."""
    by_epoch: dict[int, dict] = {}
    for row in rows:
        epoch = _clean(row.get("epoch"))
        if epoch is None:
            continue
        by_epoch[int(epoch)] = {k: _clean(row[k]) for k in layout.HISTORY_KEYS if k in row} | {"epoch": int(epoch)}
    return [by_epoch[e] for e in sorted(by_epoch)]


def sweep_trial(config: dict, ctx: TrialContext) -> None:
    """One Tune trial: the chain's trainer for (the trial's specialist, the stage) with the trial's
    hyperparameters.

    Reports reach Tune (and ASHA) through ``TuneReportCallback``. When the trainer ends, the trial
    writes ``trial.json`` (hyperparameters, recipe, final metrics) into its run folder; a trial
    restarted after that (an interruption before Tune saved its state) re-reports those final
    metrics instead of training again. Per-epoch histories are Tune's (``trials.json``).
    """
    from ray.tune.integration.ray_train import TuneReportCallback

    trial_id = tune.get_context().get_trial_id()
    hparams = {k: float(config[k]) for k in HPARAMS if k in config}
    job = ctx.jobs[config[SPECIALIST]]
    job = dataclasses.replace(job, recipe=job.recipe.replace(**hparams))
    parts = layout.trial_run_parts(ctx.cfg.name, ctx.sweep, job.specialist, trial_id)
    if ctx.storage.exists(*parts, layout.TRIAL_FILE):
        last = ctx.storage.read_json(*parts, layout.TRIAL_FILE).get("final_metrics") or {}
        if last:
            tune.report(last)
        return
    trainer = build_trainer(job, ctx.cfg, ctx.storage, run_name="/".join(parts[1:]),
                            callbacks=[TuneReportCallback()])
    result = trainer.fit()
    if result.error:
        raise result.error
    best = result.get_best_checkpoint(metric=METRIC, mode=MODE)
    final = {k: _clean(v) for k, v in (result.metrics or {}).items() if isinstance(_clean(v), (int, float))}
    ctx.storage.write_json({"trial_id": trial_id, "specialist": job.specialist, "stage": job.recipe.name,
                            "hparams": hparams, "recipe": to_dict(job.recipe), "final_metrics": final,
                            "best_checkpoint": best.path if best else None}, *parts, layout.TRIAL_FILE)


class SweepProgress(tune.Callback):
    """A Tune callback printing one line when a trial starts, stops early, finishes or fails."""

    def __init__(self, max_epochs: int):
        self.max_epochs = max_epochs

    def _say(self, trial: Any, what: str) -> None:
        hp = " ".join(f"{k}={trial.config[k]:.3g}" for k in HPARAMS if k in trial.config)
        print(f"[tune] {trial.config.get(SPECIALIST)} trial {trial.trial_id} ({hp}): {what}", flush=True)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._say(trial, "started")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        last = trial.last_result or {}
        epoch, auc = last.get("epoch", 0), last.get(METRIC)
        state = "finished" if epoch >= self.max_epochs else "stopped early by ASHA"
        self._say(trial, f"{state} at epoch {epoch}/{self.max_epochs}"
                         + (f", val_auc {auc:.4f}" if isinstance(auc, (int, float)) else ""))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._say(trial, "failed (its error file is in the sweep's tune folder)")


# ----------------------------------------------------------------------------------- the sweep

@dataclass
class SweepPlan:
    """A validated sweep: the stage, its jobs (one per specialist), the resolved space and search."""

    cfg: SweepConfig
    train: TrainConfig
    storage: Storage
    stage: StageRecipe
    jobs: list[Job]
    space: ResolvedSpace
    search: str

    @property
    def signature(self) -> dict:
        """What fixes a sweep: a rerun under the same name must match it to resume."""
        return {"stage": self.stage.name, "bounds": {k: list(v) for k, v in self.space.bounds.items()},
                "points": self.space.points, "num_samples": self.cfg.num_samples,
                "max_epochs": self.stage.total_epochs, "grace_period": self.cfg.grace_period,
                "reduction_factor": self.cfg.reduction_factor, "search": self.search, "seed": self.cfg.seed}

    def parts(self, *more: str) -> tuple[str, ...]:
        return layout.sweep_parts(self.train.name, self.cfg.sweep, *more)


def plan_sweep(cfg: SweepConfig) -> SweepPlan:
    """Validate everything before Ray starts: settings, bounds, shards, storage, init checkpoints,
    and that a rerun of an existing sweep asks for the same search."""
    check_settings(cfg)
    train = dataclasses.replace(cfg.train, stages=[cfg.stage], from_sweep=None,
                                keep_checkpoints=cfg.keep_checkpoints)
    storage, planned = plan(train, skip_complete=False)
    (stage, jobs, _), = planned
    if cfg.grace_period > stage.total_epochs:
        raise ConfigError(f"grace_period {cfg.grace_period} exceeds stage {stage.name}'s "
                          f"{stage.total_epochs} epoch(s)")
    sp = SweepPlan(cfg, train, storage, stage, jobs, resolve_space(cfg.space, stage), resolve_search(cfg.search))
    if storage.exists(*sp.parts(layout.SWEEP_FILE)):
        previous = storage.read_json(*sp.parts(layout.SWEEP_FILE)).get("signature", {})
        changed = sorted(k for k in set(previous) | set(sp.signature)
                         if json.dumps(previous.get(k)) != json.dumps(sp.signature.get(k)))
        if changed:
            raise ConfigError(f"sweep {cfg.sweep!r} in {storage.display(*sp.parts())} was started with other "
                              f"settings ({', '.join(changed)} differ); rerun it unchanged to resume, "
                              f"or choose another sweep name")
    return sp


def _searcher(sp: SweepPlan):
    """One specialist's searcher: Optuna's TPE or random search, the recipe point and ``space.points`` first."""
    if sp.search == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(points_to_evaluate=[dict(p) for p in sp.space.points] or None, seed=sp.cfg.seed)
    return RandomSearch(points=sp.space.points, seed=sp.cfg.seed)


def experiment_parts(sp: SweepPlan) -> tuple[str, ...]:
    """The sweep's Tune experiment: one for its set of specialists (``tune/cm_tm``), so a rerun
    with the same specialists resumes it and one with others starts its own."""
    return layout.sweep_tune_parts(sp.train.name, sp.cfg.sweep, "_".join(sorted(j.specialist for j in sp.jobs)))


def build_tuner(sp: SweepPlan):
    """The sweep's Tuner (every specialist's trials, one cap), or the restored one when its experiment exists."""
    ctx = TrialContext({j.specialist: j for j in sp.jobs}, sp.train, sp.storage, sp.cfg.sweep)
    trainable = tune.with_resources(tune.with_parameters(sweep_trial, ctx=ctx), {"CPU": 0.01})
    fs = sp.storage.filesystem if sp.storage.is_s3 else None
    parts = experiment_parts(sp)
    experiment = sp.storage.path(*parts)
    if tune.Tuner.can_restore(experiment, storage_filesystem=fs):
        print(f"[tune] {', '.join(j.specialist for j in sp.jobs)}: resuming the sweep in {sp.storage.display(*parts)}",
              flush=True)
        return tune.Tuner.restore(experiment, trainable, resume_unfinished=True,
                                  resume_errored=sp.cfg.retry_errored, storage_filesystem=fs)
    keys = [j.specialist for j in sp.jobs]
    # stop_last_trials=False: a trial that reaches max_t ends by itself (and records trial.json)
    # instead of being stopped by the scheduler at its last report
    scheduler = SpecialistASHA(keys, time_attr="epoch", max_t=sp.stage.total_epochs, grace_period=sp.cfg.grace_period,
                               reduction_factor=sp.cfg.reduction_factor, stop_last_trials=False)
    search = SpecialistSearch({k: _searcher(sp) for k in keys}, sp.cfg.num_samples)
    return tune.Tuner(
        trainable,
        param_space=sp.space.param_space(),
        tune_config=tune.TuneConfig(metric=METRIC, mode=MODE, num_samples=sp.cfg.num_samples * len(keys),
                                    max_concurrent_trials=sp.cfg.max_concurrent or None,
                                    search_alg=search, scheduler=scheduler, reuse_actors=False,
                                    trial_dirname_creator=trial_dirname),
        run_config=tune.RunConfig(name=parts[-1], storage_path=sp.storage.path(*parts[:-1]),
                                  storage_filesystem=fs, verbose=0,
                                  callbacks=[SweepProgress(sp.stage.total_epochs)]),
    )


def _span(rows: list[dict]) -> tuple[float | None, float | None]:
    """When a trial ran, from Tune's auto-filled report fields: (first report's time minus the time
    it had run, last report's time), unix seconds (``timestamp`` is whole seconds)."""
    times = [(r["timestamp"] - (r.get("time_total_s") or 0.0), r["timestamp"]) for r in rows
             if isinstance(_clean(r.get("timestamp")), (int, float))]
    if not times:
        return None, None
    return round(float(min(t[0] for t in times)), 2), float(max(t[1] for t in times))


def collect_trials(sp: SweepPlan, results) -> list[dict]:
    """One row per trial: specialist, hyperparameters, status, history, best epoch, when it ran."""
    max_epochs = sp.stage.total_epochs
    rows = []
    for result in results:
        trial_id, specialist = Path(result.path).name, result.config[SPECIALIST]
        df = result.metrics_dataframe
        reports = df.to_dict("records") if df is not None else []
        history = _history(reports)
        epochs = history[-1]["epoch"] if history else 0
        if result.error is not None:
            status = "error"
        elif epochs >= max_epochs:
            status = "finished"
        elif epochs:
            status = "stopped"
        else:
            status = "no result"
        scored = [h for h in history if h.get(METRIC) is not None]
        best = max(scored, key=_rank) if scored else {}
        started, ended = _span(reports)
        rows.append({
            "specialist": specialist, "trial_id": trial_id, "status": status,
            "hparams": {k: float(result.config[k]) for k in sp.space.bounds if k in result.config},
            "epochs": epochs, "max_epochs": max_epochs, "best_epoch": best.get("epoch"),
            "best_val_auc": best.get(METRIC), "best_val_log_loss": best.get("val_log_loss"),
            "last_val_auc": scored[-1][METRIC] if scored else None,
            "error": str(result.error).strip().splitlines()[-1][:300] if result.error is not None else None,
            "run": sp.storage.display(*layout.trial_run_parts(sp.train.name, sp.cfg.sweep, specialist, trial_id)),
            "started": started, "ended": ended, "history": history,
        })
    return sorted(rows, key=lambda r: (r["specialist"], r["trial_id"]))


def _rank(row: dict) -> tuple[float, float]:
    """Higher is better: val AUC, then lower val log loss."""
    auc = row.get(METRIC) if row.get(METRIC) is not None else row.get("best_val_auc")
    loss = row.get("val_log_loss") if "val_log_loss" in row else row.get("best_val_log_loss")
    return (auc if auc is not None else -math.inf, -(loss if loss is not None else math.inf))


def best_checkpoint_in_run(storage: Storage, run: tuple[str, ...]) -> tuple[str, dict] | None:
    """The best-by-validation checkpoint folder a trial's Ray Train run kept, with its ``meta.json``."""
    import pyarrow.fs as pafs

    infos = storage.filesystem.get_file_info(pafs.FileSelector(storage.path(*run), allow_not_found=True))
    best: tuple[tuple, str, dict] | None = None
    for info in infos:
        if info.type != pafs.FileType.Directory or not info.base_name.startswith("checkpoint_"):
            continue
        if not storage.exists(*run, info.base_name, layout.META_FILE):
            continue
        meta = storage.read_json(*run, info.base_name, layout.META_FILE)
        key = (*_rank(meta.get("metrics", {})), meta.get("epoch", 0))
        if best is None or key > best[0]:
            best = (key, info.base_name, meta)
    return (best[1], best[2]) if best else None


def select_best(sp: SweepPlan, specialist: str, trials: list[dict]) -> dict | None:
    """Copy the specialist's best trial's best checkpoint (by validation) to ``best/<specialist>/``;
    return its best.json entry."""
    mine = (t for t in trials if t["specialist"] == specialist and t["best_val_auc"] is not None)
    for trial in sorted(mine, key=_rank, reverse=True):
        run = layout.trial_run_parts(sp.train.name, sp.cfg.sweep, specialist, trial["trial_id"])
        found = best_checkpoint_in_run(sp.storage, run)
        if found is None:
            continue
        folder, meta = found
        target = layout.sweep_best_parts(sp.train.name, sp.cfg.sweep, specialist)
        source = sp.storage.display(*run, folder)
        previous = _read_best(sp)
        if previous.get("best", {}).get(specialist, {}).get("source") != source \
                or not sp.storage.exists(*target, layout.CHECKPOINT_FILE):
            sp.storage.copy_in(sp.storage.path(*run, folder), sp.storage.filesystem, *target)
        metrics = meta.get("metrics", {})
        return {"hparams": trial["hparams"], "checkpoint": sp.storage.display(*target),
                "val_auc": metrics.get(METRIC), "val_log_loss": metrics.get("val_log_loss"),
                "epoch": meta.get("epoch"), "trial_id": trial["trial_id"], "trial_status": trial["status"],
                "source": source}
    return None


def write_results(sp: SweepPlan, trials: list[dict], best: dict[str, dict], wall_s: float) -> None:
    """trials.csv / trials.json / trials.png, then best.json (written last: the sweep is usable)."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        with (tmp_path / layout.TRIALS_CSV).open("w", newline="") as f:
            cols = ["specialist", "trial_id", "status", *HPARAMS, "epochs", "max_epochs", "best_epoch",
                    "best_val_auc", "best_val_log_loss", "last_val_auc", "error", "started", "ended"]
            writer = csv.DictWriter(f, fieldnames=cols)
            writer.writeheader()
            for t in trials:
                writer.writerow({**{k: t.get(k) for k in cols if k not in HPARAMS},
                                 **{k: t["hparams"].get(k) for k in HPARAMS}})
        (tmp_path / layout.TRIALS_JSON).write_text(json.dumps(
            {"sweep": sp.cfg.sweep, "stage": sp.stage.name, "metric": METRIC, "mode": MODE,
             "signature": sp.signature, "trials": trials}, indent=2, default=str))
        if trials:
            plot_trials(trials, tmp_path / layout.TRIALS_PNG, sp.stage.name, sp.stage.total_epochs)
        sp.storage.upload_dir(tmp, *sp.parts())
    previous = _read_best(sp)
    merged = {**previous.get("best", {}), **best} if previous.get("stage") == sp.stage.name else dict(best)
    sp.storage.write_json({"sweep": sp.cfg.sweep, "stage": sp.stage.name, "metric": METRIC, "mode": MODE,
                           "best": merged, "space": sp.space.describe(), "search": sp.search,
                           "wall_s": round(wall_s, 1)}, *layout.best_config_parts(sp.train.name, sp.cfg.sweep))


def run_sweep(cfg: SweepConfig) -> dict:
    """Validate, then sweep every specialist at once (resuming what exists); returns the best.json content."""
    start = time.time()
    sp = plan_sweep(cfg)
    init_ray(sp.train.address, sp.train.num_cpus)
    if not sp.storage.exists(*sp.parts(layout.SWEEP_FILE)):
        sp.storage.write_json({"sweep": cfg.sweep, "signature": sp.signature, "config": to_dict(cfg),
                               "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, *sp.parts(layout.SWEEP_FILE))
    print(f"[tune] sweep {cfg.sweep!r}, stage {sp.stage.name}: {sp.space.describe()}; {sp.search} search, "
          f"{cfg.num_samples} trial(s) per specialist ({', '.join(j.specialist for j in sp.jobs)}), "
          f"{cfg.max_concurrent or 'as many as the cluster fits'} at once in all; ASHA per specialist on "
          f"{METRIC} (grace {cfg.grace_period}, reduction {cfg.reduction_factor:g}, max {sp.stage.total_epochs} "
          f"epoch(s)); storage {sp.storage.display(*sp.parts())}", flush=True)
    trials = collect_trials(sp, build_tuner(sp).fit())
    best: dict[str, dict] = {}
    for job in sp.jobs:
        chosen = select_best(sp, job.specialist, trials)
        if chosen is not None:
            best[job.specialist] = chosen
        else:
            print(f"[tune] {job.specialist}: no trial reported a checkpoint", file=sys.stderr, flush=True)
    write_results(sp, trials, best, time.time() - start)
    wall = time.time() - start
    stopped = sum(t["status"] == "stopped" for t in trials)
    print(format_sweep_summary([k for k in HPARAMS if k in sp.space.bounds], trials, best), flush=True)
    print(f"[tune] {len(trials)} trial(s), {stopped} stopped early, "
          f"{sum(t['status'] == 'error' for t in trials)} failed; {wall:.1f} s", flush=True)
    print(f"[tune] results: {sp.storage.display(*sp.parts(layout.TRIALS_CSV))}, "
          f"{sp.storage.display(*sp.parts(layout.TRIALS_PNG))}",
          flush=True)
    print(f"[tune] best config: {sp.storage.display(*layout.best_config_parts(sp.train.name, cfg.sweep))} "
          f"(train with: interceptor train --from-sweep {cfg.sweep})", flush=True)
    if not best:
        raise RuntimeError(f"sweep {cfg.sweep!r}: no trial produced a checkpoint")
    return sp.storage.read_json(*layout.best_config_parts(sp.train.name, cfg.sweep))
