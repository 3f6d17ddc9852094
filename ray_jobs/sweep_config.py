"""What a sweep searches and how (``interceptor tune``'s config): the search space, the sweep's
settings, their one-line checks, and the space resolved against a stage's recipe.

See ``ray_jobs/configs/sweep.yaml`` for a documented example.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from ray_jobs.config import ConfigError, StageRecipe, TrainConfig, apply_overrides, from_dict, load_yaml
from specialists.losses import LossKind

#: hyperparameters a sweep can search: StageRecipe field names
HPARAMS = ("lr", "focal_gamma", "focal_alpha")
METRIC = "val_auc"
MODE = "max"
SEARCHES = ("auto", "optuna", "random")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


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
    """Trials running at once, all specialists together: one cap for the whole sweep, whose
    specialists are swept side by side (0: as many as the cluster fits). Size it to the cluster:
    each trial is one trainer of ``train.num_workers`` workers."""
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
        from ray import tune

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
