"""Typed configs: the generic dataclass <-> YAML glue, stage recipes (``configs/stages.yaml``), the
stage chain, and the run config of ``interceptor train`` (:class:`TrainConfig`, which the other jobs
reuse for storage, shards and resources).

Every config in the project is a dataclass with documented fields. :func:`from_dict` builds one
from plain data (YAML/JSON), converting enums, nested dataclasses, tuples and optionals, and
refusing unknown keys with one clear line; :func:`to_dict` goes back; :func:`apply_overrides`
applies ``key.sub=value`` strings from the command line.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from data_pipeline.augment import AugmentationSpec
from data_pipeline.filters import Preprocessing
from data_pipeline.pseudo_fakes import PseudoFakes
from specialists.losses import LossKind
from specialists.model import ModelConfig

CONFIG_DIR = Path(__file__).with_name("configs")
T = TypeVar("T")


class ConfigError(ValueError):
    """A one-line, user-facing configuration error."""


# --------------------------------------------------------------------------- dataclass <-> data

def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        if len(args) == 1:  # Optional[X]: X's own error says what is wrong
            return _convert(args[0], value, where)
        errors = []
        for a in args:
            try:
                return _convert(a, value, where)
            except (ConfigError, TypeError, ValueError) as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: {value!r} does not fit {tp}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            raise ConfigError(f"{where}: {value!r} is not one of {[m.value for m in tp]}") from None
    if origin in (tuple, list):
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            value = [value]
        inner = args[0] if args else Any
        items = [_convert(inner, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        kt, vt = typing.get_args(tp) or (Any, Any)
        return {_convert(kt, k, where): _convert(vt, v, f"{where}.{k}") for k, v in value.items()}
    if tp is float and isinstance(value, (int, float, str)) and not isinstance(value, bool):
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if tp is int and isinstance(value, (int, str)) and not isinstance(value, bool):
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
    if tp is bool:
        if isinstance(value, str) and value.lower() in {"true", "false", "1", "0", "yes", "no"}:
            return value.lower() in {"true", "1", "yes"}
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, (str, int, float)):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


def from_dict(cls: type[T], data: dict, where: str | None = None) -> T:
    """Build dataclass ``cls`` from plain data, refusing unknown keys with one clear line."""
    where = where or cls.__name__
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    kwargs = {k: _convert(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from None


def to_dict(obj: Any) -> Any:
    """Plain data (YAML/JSON-ready) from a dataclass, enum, tuple, ..."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def load_yaml(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None


def apply_overrides(obj: T, overrides: list[str]) -> T:
    """Apply ``a.b=value`` overrides (values parsed as YAML) to a dataclass, returning a new one."""
    data = to_dict(obj)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                raise ConfigError(f"override {item!r}: {p!r} is not a section")
            node = node[p]
        node[parts[-1]] = yaml.safe_load(raw)
    return from_dict(type(obj), data)


# --------------------------------------------------------------------------- stage recipes

@dataclass(frozen=True)
class StageRecipe:
    """One stage of the chain (design section 3). A stage is data, not a script."""

    name: str
    """Stage name, also the folder name of its runs in storage."""
    dataset: str
    """Dataset whose shards the stage trains on: ``ffpp``, ``celebdf`` or ``dfdc``."""
    lr: float
    """AdamW learning rate (cosine-annealed over the stage)."""
    epochs: int
    """Epochs; per chunk when ``chunks > 1``."""
    loss: LossKind
    """``cross_entropy``, ``focal`` or ``weighted_focal`` (class weights from the label counts)."""
    dropout: float
    """Classifier dropout during this stage."""
    augmentation: AugmentationSpec = field(default_factory=AugmentationSpec)
    """Training augmentation strength."""
    preprocessing: Preprocessing = Preprocessing.RESIZE
    """Filter applied to face crops when shards are prepared and when videos are scored."""
    init_from: str | None = None
    """Stage whose final checkpoint initialises this one (weights only); ``None``: backbone weights."""
    focal_alpha: float | None = None
    """Focal alpha (weight of the fake class; real gets ``1 - alpha``); ``None``: no alpha."""
    focal_gamma: float = 2.0
    """Focal gamma (focusing parameter); ignored by cross-entropy."""
    chunks: int = 1
    """Progressive training: the dataset's parts are split into this many chunks, trained in order."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    warmup_steps: int = 0
    """Optimiser steps at the start of the stage over which the learning rate rises linearly to
    ``lr`` (step ``i`` uses ``lr * (i + 1) / warmup_steps``); 0: none. Every stage starts a fresh
    AdamW, whose first updates are about ``lr`` in size whatever the gradients: a warm-up keeps
    them from undoing the weights the stage was initialised with."""
    pseudo_fakes: PseudoFakes | None = None
    """Self-blended pseudo-fakes made from the stage's real training clips, in the training stream
    (``{method: sbi, ratio: 0.5}``; :mod:`data_pipeline.pseudo_fakes`); ``None``: none."""
    aliases: tuple[str, ...] = ()
    """Other names accepted for this stage (the seed's ``stage1``/``stage2``/``stage4``)."""

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ConfigError(f"stage {self.name}: lr must be > 0, got {self.lr}")
        if self.focal_gamma < 0:
            raise ConfigError(f"stage {self.name}: focal_gamma must be >= 0, got {self.focal_gamma}")
        if self.focal_alpha is not None and not 0 <= self.focal_alpha <= 1:
            raise ConfigError(f"stage {self.name}: focal_alpha must be in [0, 1], got {self.focal_alpha}")
        if self.epochs < 1 or self.chunks < 1:
            raise ConfigError(f"stage {self.name}: epochs and chunks must be >= 1")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"stage {self.name}: dropout must be in [0, 1), got {self.dropout}")
        if self.warmup_steps < 0:
            raise ConfigError(f"stage {self.name}: warmup_steps must be >= 0, got {self.warmup_steps}")

    @property
    def total_epochs(self) -> int:
        return self.epochs * self.chunks

    def replace(self, **changes: Any) -> "StageRecipe":
        return dataclasses.replace(self, **changes)


@dataclass
class StageChain:
    """The ordered stages; each one's ``init_from`` names an earlier stage (or none)."""

    stages: list[StageRecipe]

    def __post_init__(self) -> None:
        seen: dict[str, str] = {}
        for s in self.stages:
            for n in (s.name, *s.aliases):
                if n in seen:
                    raise ConfigError(f"stage name {n!r} is used twice ({seen[n]} and {s.name})")
                seen[n] = s.name
            if s.init_from is not None and s.init_from not in {x.name for x in self.stages[: self.stages.index(s)]}:
                raise ConfigError(f"stage {s.name}: init_from {s.init_from!r} is not an earlier stage")

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.stages]

    def get(self, name: str) -> StageRecipe:
        for s in self.stages:
            if name == s.name or name in s.aliases:
                return s
        known = ", ".join(f"{s.name} ({'/'.join(s.aliases)})" if s.aliases else s.name for s in self.stages)
        raise ConfigError(f"unknown stage {name!r}; known: {known}")

    def select(self, names: list[str] | None) -> list[StageRecipe]:
        """The named stages in chain order (all when ``names`` is empty)."""
        if not names:
            return list(self.stages)
        wanted = {self.get(n).name for n in names}
        return [s for s in self.stages if s.name in wanted]

    def previous(self, stage: StageRecipe) -> StageRecipe | None:
        return self.get(stage.init_from) if stage.init_from else None

    def with_stage(self, recipe: StageRecipe) -> "StageChain":
        return StageChain([recipe if s.name == recipe.name else s for s in self.stages])

    def to_dict(self) -> dict:
        return {"stages": [to_dict(s) for s in self.stages]}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_dict(cls, data: dict, where: str = "stages") -> "StageChain":
        if not isinstance(data, dict) or not isinstance(data.get("stages"), list):
            raise ConfigError(f"{where}: expected a mapping with a 'stages' list")
        return cls([from_dict(StageRecipe, s, f"{where}[{s.get('name', i)}]")
                    for i, s in enumerate(data["stages"])])

    @classmethod
    def load(cls, path: str | Path | None = None) -> "StageChain":
        """The stage chain from ``path`` (default: the packaged ``configs/stages.yaml``)."""
        path = Path(path) if path else CONFIG_DIR / "stages.yaml"
        return cls.from_dict(load_yaml(path), where=str(path))


# --------------------------------------------------------------------------- the run

@dataclass
class TrainConfig:
    """A training run: which specialists through which stages, on which shards, stored where."""

    shards: dict[str, str] = field(default_factory=dict)
    """Shard folder per dataset (``ffpp``, ``celebdf``, ``dfdc``), written by ``interceptor prepare``
    with that dataset's stage preprocessing: a folder every node sees (local, NFS) or an ``s3://``
    prefix (``s3_endpoint``), read in place."""
    storage_path: str = "runs"
    """Where runs, checkpoints and reports go: a local/NFS path or ``s3://bucket/prefix``."""
    s3_endpoint: str | None = None
    """Custom S3-compatible endpoint of the run's ``s3://`` locations (storage, shards), e.g.
    ``http://127.0.0.1:9000`` (default: AWS or ``AWS_ENDPOINT_URL``)."""
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
    nodes with CPUs to spare, 4 keeps a GPU busier (docs/experiments.md)."""
    uint8_frames: bool = True
    """Stream clip frames to the training device as uint8 and turn them into float there (the
    runner does, on arrival): a quarter of the bytes through the prefetch queue, memory pinning
    and the host-to-device copy, and no float conversion on the CPU. False converts to float32
    in the prefetch threads."""
    shuffle_buffer: int = 256
    """Rows in each worker's local shuffle buffer."""
    balance_classes: bool = True
    """Resample the training stream so both classes are equally frequent (systematic resampling of
    each streamed batch, :func:`ray_jobs.collate.balance_batch`). The weighted-focal loss then weights both
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
    """Failures a trainer survives (a worker or its node lost: restarted from its last checkpoint);
    also how often a specialist's chain driver is started again when its node is lost."""
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
    hold_out: list[str] = field(default_factory=list)
    """Manipulation families (the shards' ``method``) whose fakes are removed from every stage's
    training and validation data: the leave-one-family-out protocol. Their test fakes stay, and
    ``evaluate`` marks them as absent from training."""

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: list[str] | None = None) -> "TrainConfig":
        cfg = from_dict(cls, load_yaml(path)) if path else cls()
        return apply_overrides(cfg, overrides or [])
