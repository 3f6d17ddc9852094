"""Typed configs: stage recipes (``configs/stages.yaml``) and the generic dataclass <-> YAML glue.

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
from specialists.losses import LossKind

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
    except TypeError as e:
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
