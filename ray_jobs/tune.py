"""``interceptor tune``: Ray Tune sweeps of a stage's learning rate and focal-loss gamma / alpha.

    interceptor tune --config ray_jobs/configs/sweep.yaml --train-config run.yaml --sweep s1 --stage celebdf
    interceptor tune --config sweep.yaml --set num_samples=16 --set space.lr=[1e-5,1e-3] --specialists cm tm
    python -m ray_jobs.tune --config sweep.yaml             # the same, as a module
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python -m ray_jobs.tune --config sweep.yaml
    interceptor train --config run.yaml --from-sweep s1     # then train the chain with what it found

For each chosen specialist, one Ray Tune experiment samples ``lr`` (log-uniform, by default
``[lr / 10, lr * 10]`` around the stage recipe's value), ``focal_gamma`` (uniform, focal stages) and
``focal_alpha`` (uniform, where the stage's loss has an alpha). Each trial is one ``TorchTrainer``
built exactly as the chain builds it (``train.plan`` -> ``Job`` -> ``train.build_trainer``), with
the job's recipe replaced by the trial's values: same shards, same class balancing, initialised from
the previous stage's final checkpoint. The trainer's per-epoch reports reach Tune through
``TuneReportCallback``; an ASHA scheduler (``time_attr="epoch"``, ``val_auc`` max) stops poor trials
early; Optuna's TPE proposes the values when ``optuna`` is installed (``pip install
'interceptor-specialists[tune]'``), otherwise random search. Specialists are swept one after the
other; within a specialist ``max_concurrent`` trials run at once.

Storage, under ``<storage>/<name>/sweeps/<sweep>/``:

```
sweep.json                    the resolved search space and scheduler settings (a rerun must match)
tune/<specialist>/            the Ray Tune experiment (what ``Tuner.restore`` resumes)
trials/<specialist>-<trial>/  that trial's Ray Train run (checkpoints) and, once it finished, trial.json
trials.csv  trials.json       every trial: hyperparameters, status, epochs, best val AUC, per-epoch history
trials.png                    val AUC vs lr coloured by gamma, and val AUC curves per trial
best/<specialist>/            the best trial's best checkpoint (an ordinary chain checkpoint folder)
best.json                     {"stage", "best": {<specialist>: {"hparams", "checkpoint", "val_auc", ...}}}
```

``interceptor train --from-sweep <sweep>`` reads ``best.json`` (see :func:`best_config_parts`) and
trains that stage with each specialist's best values; the checkpoints record them in their recipe.

Rerunning the same command with the same sweep name resumes an interrupted sweep
(``Tuner.restore``): finished trials are kept, unfinished and errored ones continue from their last
checkpoint (their Ray Train run has the same name), and the searcher goes on to ``num_samples``. A
rerun of a finished sweep only prints its summary. The search space and scheduler of a sweep are
fixed once it started: a rerun with different ones is refused (use another sweep name).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.schedulers import ASHAScheduler

from ray_jobs.config import ConfigError, StageRecipe, apply_overrides, from_dict, load_yaml, to_dict
from ray_jobs.storage import Storage, StorageError
from ray_jobs.train import Job, TrainConfig, build_trainer, plan
from specialists.losses import LossKind
from specialists.registry import SpecialistError

#: hyperparameters a sweep can search: StageRecipe field names
HPARAMS = ("lr", "focal_gamma", "focal_alpha")
METRIC = "val_auc"
MODE = "max"
TRIAL_FILE = "trial.json"
SWEEP_FILE = "sweep.json"
BEST_FILE = "best.json"
HISTORY_COLUMNS = ("epoch", "chunk", "train_loss", "val_auc", "val_log_loss", "val_loss", "val_acc_real",
                   "val_acc_fake", "epoch_time_s")
SEARCHES = ("auto", "optuna", "random")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


# ----------------------------------------------------------------------------------- config

@dataclass
class SearchSpace:
    """What a sweep searches: bounds per hyperparameter, and trials to evaluate first."""

    lr: tuple[float, float] | None = None
    """Absolute ``[low, high]`` learning-rate bounds (log-uniform); default ``lr_factor`` around the recipe's lr."""
    lr_factor: float = 10.0
    """Without ``lr``: search ``[recipe lr / lr_factor, recipe lr * lr_factor]``. Must be > 1."""
    focal_gamma: tuple[float, float] | None = (0.5, 4.0)
    """``[low, high]`` focal gamma (uniform), searched on focal stages; ``null``: keep the recipe's."""
    focal_alpha: tuple[float, float] | None = (0.1, 0.9)
    """``[low, high]`` focal alpha (uniform), searched where the stage's loss has an alpha; ``null``: keep it."""
    start_with_recipe: bool = True
    """Evaluate the recipe's hand-set values as the first trial (the baseline the sweep must beat)."""
    points: list[dict[str, float]] = field(default_factory=list)
    """Further trials to evaluate before sampling, e.g. ``[{lr: 1.0e-3, focal_gamma: 1.0}]``; a
    hyperparameter left out takes the recipe's value. Each must lie inside the bounds."""


@dataclass
class SweepConfig:
    """A sweep of one stage's hyperparameters for the chosen specialists (``interceptor tune``)."""

    train: TrainConfig = field(default_factory=TrainConfig)
    """The run the sweep belongs to, as for ``interceptor train``: shards, storage, experiment name,
    specialists, model, batch sizes, resources, Ray address. Its ``stages`` and ``from_sweep`` are ignored."""
    train_config: str | None = None
    """A TrainConfig YAML to start ``train`` from (relative to this file); keys under ``train:`` override it."""
    sweep: str = "sweep"
    """Sweep name: the folder under ``<storage>/<name>/sweeps/`` and what ``--from-sweep`` names."""
    stage: str = ""
    """Stage to sweep, by name or seed alias (e.g. ``celebdf`` / ``stage2``). Its predecessor must be
    trained (or given in ``train.init_checkpoints``), exactly as for the chain."""
    space: SearchSpace = field(default_factory=SearchSpace)
    """The search space."""
    num_samples: int = 8
    """Trials per specialist (the recipe point and ``space.points`` included)."""
    max_concurrent: int = 2
    """Trials running at once per specialist (0: as many as the cluster fits)."""
    grace_period: int = 1
    """ASHA: epochs every trial runs before it can be stopped."""
    reduction_factor: float = 3.0
    """ASHA: at each rung only the best ``1 / reduction_factor`` of the trials continue."""
    search: str = "auto"
    """``optuna`` (TPE), ``random``, or ``auto``: Optuna when installed, else random search."""
    seed: int | None = None
    """Seed of the search algorithm (``None``: random)."""
    keep_checkpoints: int = 1
    """Checkpoints each trial keeps, by best val AUC (the latest is kept too, for resuming)."""
    retry_errored: bool = True
    """On a rerun, also resume trials that ended in an error (from their last checkpoint); otherwise
    they stay errored."""

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: list[str] | None = None,
             train_config: str | Path | None = None) -> "SweepConfig":
        """A sweep config from YAML (plus a referenced TrainConfig YAML, plus ``key=value`` overrides)."""
        data = load_yaml(path) if path else {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping")
        ref = train_config or data.get("train_config")
        if ref:
            ref_path = Path(ref)
            if not ref_path.is_absolute() and path and not train_config and (Path(path).parent / ref_path).is_file():
                ref_path = Path(path).parent / ref_path
            base = load_yaml(ref_path)
            if not isinstance(base, dict):
                raise ConfigError(f"{ref_path}: expected a mapping")
            data = {**data, "train_config": str(ref_path), "train": _merge(base, data.get("train") or {})}
        return apply_overrides(from_dict(cls, data), overrides or [])


def _merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def check_settings(cfg: SweepConfig) -> None:
    """Refuse nonsensical sweep settings and search bounds with one line (no stage needed)."""
    if not cfg.stage:
        raise ConfigError("no stage to sweep (set stage: or --stage)")
    if not _NAME.match(cfg.sweep):
        raise ConfigError(f"sweep name {cfg.sweep!r}: use letters, digits, '.', '_' or '-'")
    if cfg.num_samples < 1:
        raise ConfigError(f"num_samples must be >= 1, got {cfg.num_samples}")
    if cfg.max_concurrent < 0:
        raise ConfigError(f"max_concurrent must be >= 0, got {cfg.max_concurrent}")
    if cfg.grace_period < 1:
        raise ConfigError(f"grace_period must be >= 1 epoch, got {cfg.grace_period}")
    if not cfg.reduction_factor > 1:
        raise ConfigError(f"reduction_factor must be > 1, got {cfg.reduction_factor}")
    if cfg.keep_checkpoints < 1:
        raise ConfigError(f"keep_checkpoints must be >= 1, got {cfg.keep_checkpoints}")
    if cfg.search not in SEARCHES:
        raise ConfigError(f"search {cfg.search!r} is not one of {', '.join(SEARCHES)}")
    space = cfg.space
    if not space.lr_factor > 1:
        raise ConfigError(f"space.lr_factor must be > 1, got {space.lr_factor}")
    for key in HPARAMS:
        bounds = getattr(space, key)
        if bounds is None:
            continue
        if len(bounds) != 2:
            raise ConfigError(f"space.{key}: expected [low, high], got {list(bounds)}")
        low, high = bounds
        if not all(math.isfinite(b) for b in bounds):
            raise ConfigError(f"space.{key}: bounds must be finite numbers, got {list(bounds)}")
        if key == "lr" and low <= 0:
            raise ConfigError(f"space.lr: learning rates must be > 0, got [{low:g}, {high:g}]")
        if key == "focal_gamma" and low < 0:
            raise ConfigError(f"space.focal_gamma: gamma must be >= 0, got [{low:g}, {high:g}]")
        if key == "focal_alpha" and not (0 <= low and high <= 1):
            raise ConfigError(f"space.focal_alpha: alpha must lie within [0, 1], got [{low:g}, {high:g}]")
        if low >= high:
            raise ConfigError(f"space.{key}: lower bound {low:g} must be below the upper bound {high:g}")
    if len(space.points) + int(space.start_with_recipe) > cfg.num_samples:
        raise ConfigError(f"space.points (+ the recipe point) hold {len(space.points) + int(space.start_with_recipe)} "
                          f"trials but num_samples is {cfg.num_samples}")
    for i, point in enumerate(space.points):
        unknown = sorted(set(point) - set(HPARAMS))
        if unknown:
            raise ConfigError(f"space.points[{i}]: unknown hyperparameter(s) {', '.join(unknown)}; "
                              f"searchable: {', '.join(HPARAMS)}")


@dataclass(frozen=True)
class ResolvedSpace:
    """The search space of one stage: bounds of the searched hyperparameters, and the first points."""

    bounds: dict[str, tuple[float, float]]
    points: list[dict[str, float]]

    def param_space(self) -> dict:
        domains = {"lr": tune.loguniform, "focal_gamma": tune.uniform, "focal_alpha": tune.uniform}
        return {k: domains[k](lo, hi) for k, (lo, hi) in self.bounds.items()}

    def describe(self) -> str:
        return ", ".join(f"{k} {'log-' if k == 'lr' else ''}uniform [{lo:.3g}, {hi:.3g}]"
                         for k, (lo, hi) in self.bounds.items())


def resolve_space(space: SearchSpace, recipe: StageRecipe) -> ResolvedSpace:
    """The bounds the stage's loss makes meaningful, and the points (recipe first), all checked."""
    bounds: dict[str, tuple[float, float]] = {}
    lr = space.lr or (recipe.lr / space.lr_factor, recipe.lr * space.lr_factor)
    bounds["lr"] = (float(lr[0]), float(lr[1]))
    focal = recipe.loss in (LossKind.FOCAL, LossKind.WEIGHTED_FOCAL)
    if focal and space.focal_gamma is not None:
        bounds["focal_gamma"] = (float(space.focal_gamma[0]), float(space.focal_gamma[1]))
    if focal and recipe.focal_alpha is not None and space.focal_alpha is not None:
        bounds["focal_alpha"] = (float(space.focal_alpha[0]), float(space.focal_alpha[1]))
    points = []
    given = [dict(p) for p in space.points]
    if space.start_with_recipe:
        given.insert(0, {})
    for i, p in enumerate(given):
        extra = sorted(set(p) - set(bounds))
        if extra:
            raise ConfigError(f"space.points: {', '.join(extra)} is not searched on stage {recipe.name} "
                              f"(loss {recipe.loss.value}); searched: {', '.join(bounds)}")
        point = {k: float(p.get(k, getattr(recipe, k))) for k in bounds}
        for k, v in point.items():
            lo, hi = bounds[k]
            if not lo <= v <= hi:
                what = "the recipe's" if space.start_with_recipe and i == 0 else "a point's"
                raise ConfigError(f"space.{k}: {what} value {v:g} lies outside the bounds [{lo:g}, {hi:g}]"
                                  + (" (widen them or set space.start_with_recipe=false)" if what == "the recipe's"
                                     else ""))
        if point not in points:
            points.append(point)
    return ResolvedSpace(bounds, points)


def resolve_search(search: str) -> str:
    """``optuna`` or ``random`` (``auto`` picks Optuna when it is installed)."""
    try:
        import optuna  # noqa: F401

        have_optuna = True
    except ImportError:
        have_optuna = False
    if search == "optuna" and not have_optuna:
        raise ConfigError("search 'optuna' needs optuna: pip install 'interceptor-specialists[tune]' "
                          "(or set search: random)")
    if search == "auto":
        return "optuna" if have_optuna else "random"
    return search


# ----------------------------------------------------------------------------------- storage layout

def sweep_parts(name: str, sweep: str, *more: str) -> tuple[str, ...]:
    """Storage parts of a sweep's folder (and of paths below it)."""
    return (name, "sweeps", sweep, *more)


def best_config_parts(name: str, sweep: str) -> tuple[str, ...]:
    """Storage parts of a finished sweep's ``best.json`` (read by ``interceptor train --from-sweep``)."""
    return sweep_parts(name, sweep, BEST_FILE)


def trial_run_parts(name: str, sweep: str, specialist: str, trial_id: str) -> tuple[str, ...]:
    """Storage parts of a trial's Ray Train run: ``<name>/sweeps/<sweep>/trials/<specialist>-<trial>``."""
    return sweep_parts(name, sweep, "trials", f"{specialist}-{trial_id}")


def trial_dirname(trial: Any) -> str:
    """Tune trial folders are named by trial id (stable across restores)."""
    return str(trial.trial_id)


# ----------------------------------------------------------------------------------- the trial

@dataclass(frozen=True)
class TrialContext:
    """What every trial of one specialist's sweep shares (passed with ``tune.with_parameters``)."""

    job: Job
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
        by_epoch[int(epoch)] = {k: _clean(row[k]) for k in HISTORY_COLUMNS if k in row} | {"epoch": int(epoch)}
    return [by_epoch[e] for e in sorted(by_epoch)]


def sweep_trial(config: dict, ctx: TrialContext) -> None:
    """One Tune trial: the chain's trainer for (specialist, stage) with the trial's hyperparameters.

    Reports reach Tune (and ASHA) through ``TuneReportCallback``. When the trainer ends, the trial
    writes ``trial.json`` (hyperparameters, recipe, final metrics) into its run folder; a trial
    restarted after that (an interruption before Tune saved its state) re-reports those final
    metrics instead of training again. Per-epoch histories are Tune's (``trials.json``).
    """
    from ray.tune.integration.ray_train import TuneReportCallback

    trial_id = tune.get_context().get_trial_id()
    hparams = {k: float(config[k]) for k in HPARAMS if k in config}
    job = dataclasses.replace(ctx.job, recipe=ctx.job.recipe.replace(**hparams))
    parts = trial_run_parts(ctx.cfg.name, ctx.sweep, job.specialist, trial_id)
    if ctx.storage.exists(*parts, TRIAL_FILE):
        last = ctx.storage.read_json(*parts, TRIAL_FILE).get("final_metrics") or {}
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
                            "best_checkpoint": best.path if best else None}, *parts, TRIAL_FILE)


class SweepProgress(tune.Callback):
    """A Tune callback printing one line when a trial starts, stops early, finishes or fails."""

    def __init__(self, specialist: str, max_epochs: int):
        self.specialist = specialist
        self.max_epochs = max_epochs

    def _say(self, trial: Any, what: str) -> None:
        hp = " ".join(f"{k}={trial.config[k]:.3g}" for k in HPARAMS if k in trial.config)
        print(f"[tune] {self.specialist} trial {trial.trial_id} ({hp}): {what}", flush=True)

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


def reported_results(trial: Any) -> list[dict]:
    """The results a Tune trial reported so far, from its ``result.json`` in storage ([] if none)."""
    import pyarrow.fs as pafs

    if not trial.storage.trial_dir_name:  # a new trial: no folder, no results yet
        return []
    fs, path = trial.storage.storage_filesystem, f"{trial.path}/result.json"
    if fs.get_file_info(path).type != pafs.FileType.File:
        return []
    with fs.open_input_stream(path) as f:
        text = f.read().decode()
    rows = []
    for line in text.splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut short by the interruption
            continue
    return rows


class ResumableASHA(ASHAScheduler):
    """ASHA whose rung records survive ``Tuner.restore``.

    Tune does not save scheduler state with an experiment. On restore it re-adds every trial; this
    replays the results each one had already reported into its bracket, so the trials that ran before
    an interruption still set the cutoffs for those that run after it (new trials have no results,
    so nothing changes for them).
    """

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        super().on_trial_add(tune_controller, trial)
        bracket = self._trial_info[trial.trial_id]
        replayed = [r for r in reported_results(trial)
                    if r.get(self._time_attr) is not None and r.get(self._metric) is not None]
        for result in replayed:
            bracket.on_result(trial, result[self._time_attr], self._metric_op * result[self._metric])
        if replayed:
            print(f"[tune] trial {trial.trial_id}: {len(replayed)} earlier result(s) restored into ASHA's rungs",
                  flush=True)


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
        return sweep_parts(self.train.name, self.cfg.sweep, *more)


def prepare(cfg: SweepConfig) -> SweepPlan:
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
    if storage.exists(*sp.parts(SWEEP_FILE)):
        previous = storage.read_json(*sp.parts(SWEEP_FILE)).get("signature", {})
        changed = sorted(k for k in set(previous) | set(sp.signature)
                         if json.dumps(previous.get(k)) != json.dumps(sp.signature.get(k)))
        if changed:
            raise ConfigError(f"sweep {cfg.sweep!r} in {storage.display(*sp.parts())} was started with other "
                              f"settings ({', '.join(changed)} differ); rerun it unchanged to resume, "
                              f"or choose another sweep name")
    return sp


def _search_alg(sp: SweepPlan):
    if sp.search == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(points_to_evaluate=sp.space.points or None, seed=sp.cfg.seed)
    from ray.tune.search.basic_variant import BasicVariantGenerator

    return BasicVariantGenerator(points_to_evaluate=sp.space.points or None, random_state=sp.cfg.seed)


def build_tuner(sp: SweepPlan, job: Job):
    """A new Tuner for one specialist's sweep, or the restored one when its experiment exists."""
    ctx = TrialContext(job, sp.train, sp.storage, sp.cfg.sweep)
    trainable = tune.with_resources(tune.with_parameters(sweep_trial, ctx=ctx), {"CPU": 0.01})
    fs = sp.storage.filesystem if sp.storage.is_s3 else None
    experiment = sp.storage.path(*sp.parts("tune", job.specialist))
    if tune.Tuner.can_restore(experiment, storage_filesystem=fs):
        print(f"[tune] {job.specialist}: resuming the sweep in {sp.storage.display(*sp.parts('tune', job.specialist))}",
              flush=True)
        return tune.Tuner.restore(experiment, trainable, resume_unfinished=True,
                                  resume_errored=sp.cfg.retry_errored, storage_filesystem=fs)
    # stop_last_trials=False: a trial that reaches max_t ends by itself (and records trial.json)
    # instead of being stopped by the scheduler at its last report
    scheduler = ResumableASHA(time_attr="epoch", max_t=sp.stage.total_epochs, grace_period=sp.cfg.grace_period,
                               reduction_factor=sp.cfg.reduction_factor, stop_last_trials=False)
    return tune.Tuner(
        trainable,
        param_space=sp.space.param_space(),
        tune_config=tune.TuneConfig(metric=METRIC, mode=MODE, num_samples=sp.cfg.num_samples,
                                    max_concurrent_trials=sp.cfg.max_concurrent or None,
                                    search_alg=_search_alg(sp), scheduler=scheduler, reuse_actors=False,
                                    trial_dirname_creator=trial_dirname),
        run_config=tune.RunConfig(name=job.specialist, storage_path=sp.storage.path(*sp.parts("tune")),
                                  storage_filesystem=fs, verbose=0,
                                  callbacks=[SweepProgress(job.specialist, sp.stage.total_epochs)]),
    )


def collect_trials(sp: SweepPlan, job: Job, results) -> list[dict]:
    """One row per trial of a specialist's sweep: hyperparameters, status, history, best epoch."""
    max_epochs = sp.stage.total_epochs
    rows = []
    for result in results:
        trial_id = Path(result.path).name
        df = result.metrics_dataframe
        history = _history(df.to_dict("records") if df is not None else [])
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
        rows.append({
            "specialist": job.specialist, "trial_id": trial_id, "status": status,
            "hparams": {k: float(result.config[k]) for k in sp.space.bounds if k in result.config},
            "epochs": epochs, "max_epochs": max_epochs, "best_epoch": best.get("epoch"),
            "best_val_auc": best.get(METRIC), "best_val_log_loss": best.get("val_log_loss"),
            "last_val_auc": scored[-1][METRIC] if scored else None,
            "error": str(result.error).strip().splitlines()[-1][:300] if result.error is not None else None,
            "run": sp.storage.display(*trial_run_parts(sp.train.name, sp.cfg.sweep, job.specialist, trial_id)),
            "history": history,
        })
    return sorted(rows, key=lambda r: r["trial_id"])


def _rank(row: dict) -> tuple[float, float]:
    """Higher is better: val AUC, then lower val log loss."""
    auc = row.get(METRIC) if row.get(METRIC) is not None else row.get("best_val_auc")
    loss = row.get("val_log_loss") if "val_log_loss" in row else row.get("best_val_log_loss")
    return (auc if auc is not None else -math.inf, -(loss if loss is not None else math.inf))


def best_checkpoint_in_run(storage: Storage, run: tuple[str, ...]) -> tuple[str, dict] | None:
    """The best-by-validation checkpoint folder a trial's Ray Train run kept, with its ``meta.json``."""
    import pyarrow.fs as pafs

    from ray_jobs.checkpoints import META_FILE

    infos = storage.filesystem.get_file_info(pafs.FileSelector(storage.path(*run), allow_not_found=True))
    best: tuple[tuple, str, dict] | None = None
    for info in infos:
        if info.type != pafs.FileType.Directory or not info.base_name.startswith("checkpoint_"):
            continue
        if not storage.exists(*run, info.base_name, META_FILE):
            continue
        meta = storage.read_json(*run, info.base_name, META_FILE)
        key = (*_rank(meta.get("metrics", {})), meta.get("epoch", 0))
        if best is None or key > best[0]:
            best = (key, info.base_name, meta)
    return (best[1], best[2]) if best else None


def select_best(sp: SweepPlan, job: Job, trials: list[dict]) -> dict | None:
    """Copy the best trial's best checkpoint to ``best/<specialist>/``; return its best.json entry."""
    for trial in sorted((t for t in trials if t["best_val_auc"] is not None), key=_rank, reverse=True):
        run = trial_run_parts(sp.train.name, sp.cfg.sweep, job.specialist, trial["trial_id"])
        found = best_checkpoint_in_run(sp.storage, run)
        if found is None:
            continue
        folder, meta = found
        target = sp.parts("best", job.specialist)
        source = sp.storage.display(*run, folder)
        previous = sp.storage.read_json(*sp.parts(BEST_FILE)) if sp.storage.exists(*sp.parts(BEST_FILE)) else {}
        if previous.get("best", {}).get(job.specialist, {}).get("source") != source \
                or not sp.storage.exists(*target, "checkpoint.pt"):
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
        with (tmp_path / "trials.csv").open("w", newline="") as f:
            cols = ["specialist", "trial_id", "status", *HPARAMS, "epochs", "max_epochs", "best_epoch",
                    "best_val_auc", "best_val_log_loss", "last_val_auc", "error"]
            writer = csv.DictWriter(f, fieldnames=cols)
            writer.writeheader()
            for t in trials:
                writer.writerow({**{k: t.get(k) for k in cols if k not in HPARAMS},
                                 **{k: t["hparams"].get(k) for k in HPARAMS}})
        (tmp_path / "trials.json").write_text(json.dumps(
            {"sweep": sp.cfg.sweep, "stage": sp.stage.name, "metric": METRIC, "mode": MODE,
             "signature": sp.signature, "trials": trials}, indent=2, default=str))
        if trials:
            plot_trials(trials, tmp_path / "trials.png", sp.stage)
        sp.storage.upload_dir(tmp, *sp.parts())
    previous = sp.storage.read_json(*sp.parts(BEST_FILE)) if sp.storage.exists(*sp.parts(BEST_FILE)) else {}
    merged = {**previous.get("best", {}), **best} if previous.get("stage") == sp.stage.name else dict(best)
    sp.storage.write_json({"sweep": sp.cfg.sweep, "stage": sp.stage.name, "metric": METRIC, "mode": MODE,
                           "best": merged, "space": sp.space.describe(), "search": sp.search,
                           "wall_s": round(wall_s, 1)}, *best_config_parts(sp.train.name, sp.cfg.sweep))


def plot_trials(trials: list[dict], path: Path, stage: StageRecipe) -> None:
    """Per specialist: best val AUC vs lr coloured by gamma (x: stopped early), and val AUC curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    keys = list(dict.fromkeys(t["specialist"] for t in trials))
    fig, axes = plt.subplots(len(keys), 2, figsize=(11, 4 * len(keys)), squeeze=False)
    for (ax_scatter, ax_curves), key in zip(axes, keys):
        rows = [t for t in trials if t["specialist"] == key and t["best_val_auc"] is not None]
        gammas = [t["hparams"]["focal_gamma"] for t in rows if "focal_gamma" in t["hparams"]]
        colour = {"c": None, "cmap": "viridis", "vmin": min(gammas), "vmax": max(gammas)} if gammas else {}
        mappable = None
        for marker, status in (("o", "finished"), ("x", "stopped"), ("^", "error")):
            sel = [t for t in rows if t["status"] == status]
            if not sel:
                continue
            if gammas:
                colour["c"] = [t["hparams"].get("focal_gamma", 0.0) for t in sel]
            mappable = ax_scatter.scatter([t["hparams"]["lr"] for t in sel], [t["best_val_auc"] for t in sel],
                                          marker=marker, s=60, label=f"{status} ({len(sel)})", **colour)
        if gammas and mappable is not None:
            fig.colorbar(mappable, ax=ax_scatter, label="focal gamma")
        ax_scatter.set(xscale="log", xlabel="learning rate", ylabel="best val AUC",
                       title=f"{key} / {stage.name}: best val AUC per trial")
        ax_scatter.grid(alpha=0.3)
        ax_scatter.legend(fontsize=8)
        lrs = [t["hparams"]["lr"] for t in rows] or [1e-4]
        norm = LogNorm(vmin=min(lrs), vmax=max(lrs) * (1.0001 if min(lrs) == max(lrs) else 1))
        cmap = plt.get_cmap("plasma")
        for t in rows:
            hist = [h for h in t["history"] if h.get(METRIC) is not None]
            ax_curves.plot([h["epoch"] for h in hist], [h[METRIC] for h in hist], marker="o", markersize=3,
                           color=cmap(norm(t["hparams"]["lr"])), linestyle="-" if t["status"] == "finished" else "--",
                           label=f"{t['trial_id']} lr {t['hparams']['lr']:.2g}")
        ax_curves.set(xlabel="epoch", ylabel="val AUC", title=f"{key}: val AUC per trial (dashed: stopped early)",
                      xlim=(0.5, stage.total_epochs + 0.5))
        ax_curves.set_xticks(range(1, stage.total_epochs + 1))
        ax_curves.grid(alpha=0.3)
        ax_curves.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def format_summary(sp: SweepPlan, trials: list[dict], best: dict[str, dict]) -> str:
    """The trials table and the best configuration per specialist, as printed at the end."""
    keys = [k for k in HPARAMS if k in sp.space.bounds]
    lines = [f"| specialist | trial | {' | '.join(keys)} | status | epochs | best val AUC | best epoch |",
             "|" + "---|" * (6 + len(keys))]
    for t in trials:
        auc = f"{t['best_val_auc']:.4f}" if t["best_val_auc"] is not None else "-"
        lines.append(f"| {t['specialist']} | {t['trial_id']} | "
                     + " | ".join(f"{t['hparams'].get(k, float('nan')):.3g}" for k in keys)
                     + f" | {t['status']} | {t['epochs']}/{t['max_epochs']} | {auc} | {t['best_epoch'] or '-'} |")
    for key, b in best.items():
        hp = " ".join(f"{k}={v:.3g}" for k, v in b["hparams"].items())
        lines.append(f"[tune] best {key}: {hp} -> val AUC {b['val_auc']:.4f} (epoch {b['epoch']}, "
                     f"trial {b['trial_id']}); checkpoint {b['checkpoint']}")
    return "\n".join(lines)


def run_sweep(cfg: SweepConfig) -> dict:
    """Validate, then sweep each specialist (resuming what exists); returns the best.json content."""
    start = time.time()
    sp = prepare(cfg)
    from ray_jobs.cluster import init_ray

    init_ray(sp.train.address, sp.train.num_cpus)
    if not sp.storage.exists(*sp.parts(SWEEP_FILE)):
        sp.storage.write_json({"sweep": cfg.sweep, "signature": sp.signature, "config": to_dict(cfg),
                               "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, *sp.parts(SWEEP_FILE))
    print(f"[tune] sweep {cfg.sweep!r}, stage {sp.stage.name}: {sp.space.describe()}; {sp.search} search, "
          f"{cfg.num_samples} trial(s) per specialist, {cfg.max_concurrent or 'unlimited'} at once; ASHA on "
          f"{METRIC} (grace {cfg.grace_period}, reduction {cfg.reduction_factor:g}, max {sp.stage.total_epochs} "
          f"epoch(s)); storage {sp.storage.display(*sp.parts())}", flush=True)
    trials: list[dict] = []
    best: dict[str, dict] = {}
    for job in sp.jobs:
        results = build_tuner(sp, job).fit()
        rows = collect_trials(sp, job, results)
        trials.extend(rows)
        chosen = select_best(sp, job, rows)
        if chosen is not None:
            best[job.specialist] = chosen
        else:
            print(f"[tune] {job.specialist}: no trial reported a checkpoint", file=sys.stderr, flush=True)
        write_results(sp, trials, best, time.time() - start)
    wall = time.time() - start
    stopped = sum(t["status"] == "stopped" for t in trials)
    print(format_summary(sp, trials, best), flush=True)
    print(f"[tune] {len(trials)} trial(s), {stopped} stopped early, "
          f"{sum(t['status'] == 'error' for t in trials)} failed; {wall:.1f} s", flush=True)
    print(f"[tune] results: {sp.storage.display(*sp.parts('trials.csv'))}, {sp.storage.display(*sp.parts('trials.png'))}",
          flush=True)
    print(f"[tune] best config: {sp.storage.display(*best_config_parts(sp.train.name, cfg.sweep))} "
          f"(train with: interceptor train --from-sweep {cfg.sweep})", flush=True)
    if not best:
        raise RuntimeError(f"sweep {cfg.sweep!r}: no trial produced a checkpoint")
    return sp.storage.read_json(*best_config_parts(sp.train.name, cfg.sweep))


# ----------------------------------------------------------------------------------- CLI

def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="interceptor tune", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="sweep config YAML (see ray_jobs/configs/sweep.yaml)")
    ap.add_argument("--train-config", help="train config YAML the sweep belongs to (as for interceptor train)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a sweep config field, e.g. --set num_samples=16 --set space.lr=[1e-5,1e-3] "
                         "--set train.batch_size=16")
    ap.add_argument("--sweep", help="sweep name (folder under <storage>/<name>/sweeps/)")
    ap.add_argument("--stage", help="stage to sweep (name or seed alias)")
    ap.add_argument("--specialists", nargs="+", help="specialists to sweep (default: the train config's, else all)")
    ap.add_argument("--num-samples", type=int, help="trials per specialist")
    ap.add_argument("--max-concurrent", type=int, help="trials at once per specialist (0: no limit)")
    ap.add_argument("--lr-range", nargs=2, type=float, metavar=("LOW", "HIGH"), help="absolute lr bounds")
    ap.add_argument("--gamma-range", nargs=2, type=float, metavar=("LOW", "HIGH"), help="focal gamma bounds")
    ap.add_argument("--alpha-range", nargs=2, type=float, metavar=("LOW", "HIGH"), help="focal alpha bounds")
    ap.add_argument("--search", choices=SEARCHES, help="search algorithm (default: auto)")
    ap.add_argument("--storage-path", help="local path or s3://bucket/prefix")
    ap.add_argument("--s3-endpoint", help="custom S3 endpoint, e.g. http://127.0.0.1:9000")
    ap.add_argument("--name", help="experiment name (the run the sweep belongs to)")
    ap.add_argument("--address", help="Ray cluster address (default: local Ray / the job's cluster)")
    return ap


def config_from_args(args: argparse.Namespace) -> SweepConfig:
    overrides = list(args.overrides)
    for flag, key in (("sweep", "sweep"), ("stage", "stage"), ("specialists", "train.specialists"),
                      ("num_samples", "num_samples"), ("max_concurrent", "max_concurrent"),
                      ("lr_range", "space.lr"), ("gamma_range", "space.focal_gamma"),
                      ("alpha_range", "space.focal_alpha"), ("search", "search"),
                      ("storage_path", "train.storage_path"), ("s3_endpoint", "train.s3_endpoint"),
                      ("name", "train.name"), ("address", "train.address")):
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{key}={json.dumps(value)}")
    return SweepConfig.load(args.config, overrides, train_config=args.train_config)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run_sweep(config_from_args(args))
    except (ConfigError, SpecialistError, StorageError) as e:
        print(f"interceptor tune: error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        print(f"interceptor tune: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
