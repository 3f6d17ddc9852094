"""Self-describing checkpoints; "initialise from" vs "resume"; lookup by predictable name.

A checkpoint is a directory holding ``checkpoint.pt`` (loadable with
``torch.load(..., weights_only=True)``: tensors and plain containers only) and ``meta.json`` (the
same description without tensors, for people and tools). The payload carries the weights, the
optimiser / scheduler / scaler state, the model config (enough to rebuild the model alone), the
specialist's spec, the stage recipe it was trained with, epoch and chunk, metrics and library
versions.

Two different operations use it:

* :func:`init_from` — the next stage starts from the previous stage's final weights only
  (optimiser and epoch start fresh). The specialist and backbone must match.
* :func:`resume` — a crashed or interrupted stage continues exactly where it stopped: weights,
  optimiser, scheduler, scaler and epoch.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import torch

from ray_jobs.config import StageRecipe, from_dict, to_dict
from ray_jobs.layout import CHECKPOINT_FILE, META_FILE
from specialists.model import ModelConfig, SpecialistModel
from specialists.registry import SpecialistError

FORMAT = "interceptor-specialist"
FORMAT_VERSION = 1


class CheckpointError(SpecialistError):
    """A checkpoint that cannot be used, with the reason in one line."""


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    import timm
    try:
        ours = version("interceptor-specialists")
    except PackageNotFoundError:
        ours = "unknown"
    return {"interceptor": ours, "torch": str(torch.__version__), "timm": str(timm.__version__),
            "python": platform.python_version()}


def build_payload(state: dict, model_config: ModelConfig, recipe: StageRecipe, metrics: dict | None = None,
                  extra: dict | None = None) -> dict:
    """A checkpoint payload from a runner's ``state_dict()`` and its description."""
    from specialists.registry import get_spec

    epoch = int(state["epoch"])
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "specialist": model_config.specialist,
        "spec": get_spec(model_config.specialist).to_dict(),
        # the weights are in the checkpoint: rebuilding it must read no weights file and download nothing
        "model_config": model_config.to_dict() | {"weights_file": None, "pretrained": False},
        "stage": recipe.name,
        "recipe": to_dict(recipe),
        "epoch": epoch,
        "steps": int(state["steps"]),
        "chunks_done": epoch // recipe.epochs,
        "stage_complete": epoch >= recipe.total_epochs,
        "metrics": {k: v for k, v in (metrics or {}).items() if isinstance(v, (int, float, str, bool))},
        "versions": library_versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "history": list(state.get("history", [])),
        "extra": extra or {},
        **{k: state[k] for k in ("model", "optimizer", "scheduler", "scaler")},
    }


def describe(payload: dict) -> dict:
    """The payload without tensors (what ``meta.json`` holds)."""
    return {k: v for k, v in payload.items() if k not in {"model", "optimizer", "scheduler", "scaler"}}


def save_checkpoint(directory: str | Path, payload: dict) -> Path:
    """Write ``checkpoint.pt`` + ``meta.json`` into ``directory`` atomically (temp file + rename)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name, write in ((CHECKPOINT_FILE, lambda f: torch.save(payload, f)),
                        (META_FILE, lambda f: f.write(json.dumps(describe(payload), indent=2, default=str).encode()))):
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, directory / name)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return directory


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint directory (or its ``checkpoint.pt``) with ``weights_only=True``.

    Missing, truncated or foreign files raise :class:`CheckpointError` naming the file.
    """
    path = Path(path)
    file = path / CHECKPOINT_FILE if path.is_dir() else path
    if not file.is_file():
        raise CheckpointError(f"checkpoint not found: {file}")
    try:
        payload = torch.load(file, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"checkpoint {file} is truncated or corrupt ({reason})") from None
    except Exception as e:  # unpickling a foreign object under weights_only
        raise CheckpointError(f"checkpoint {file} is not an Interceptor checkpoint ({type(e).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {file} is not an Interceptor specialist checkpoint")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {file} has format version {payload.get('format_version')}, "
                              f"this build reads {FORMAT_VERSION}")
    payload["_path"] = str(file)
    return payload


def checkpoint_recipe(payload: dict) -> StageRecipe:
    return from_dict(StageRecipe, payload["recipe"])


def model_from_checkpoint(payload: dict | str | Path, device: str | torch.device = "cpu") -> SpecialistModel:
    """Rebuild the model from the checkpoint's own config and load its weights."""
    if not isinstance(payload, dict):
        payload = load_checkpoint(payload)
    model = SpecialistModel(ModelConfig.from_dict(payload["model_config"]))
    model.load_state_dict(payload["model"])
    return model.to(device)


def check_compatible(model: SpecialistModel, payload: dict) -> None:
    """Refuse a checkpoint of another specialist or backbone, naming the mismatch."""
    src = payload.get("_path", "checkpoint")
    cfg = payload["model_config"]
    for key in ("specialist", "backbone"):
        have, want = cfg.get(key), getattr(model.config, key)
        if have != want:
            raise CheckpointError(f"{src} is a {key} {have!r} checkpoint but the model is {key} {want!r}")


def init_from(model: SpecialistModel, payload: dict) -> dict:
    """Initialise ``model`` from a previous stage's weights only; returns the checkpoint's description."""
    check_compatible(model, payload)
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as e:
        raise CheckpointError(f"{payload.get('_path')}: weights do not fit the model "
                              f"({str(e).splitlines()[0]})") from None
    return describe(payload)


def resume(runner: Any, payload: dict) -> None:
    """Restore a runner (weights, optimiser, scheduler, scaler, epoch) to continue its stage."""
    check_compatible(runner.core, payload)
    if payload["stage"] != runner.recipe.name:
        raise CheckpointError(f"{payload.get('_path')} is from stage {payload['stage']!r}, "
                              f"cannot resume stage {runner.recipe.name!r} from it")
    runner.load_state_dict(payload)
