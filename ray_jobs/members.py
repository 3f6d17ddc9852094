"""The specialist checkpoints an ensemble combines, and the fitted ensemble in storage.

What ``interceptor evaluate`` and ``interceptor predict`` share: finding each specialist's latest
complete checkpoint (:func:`discover_members`), checking that the checkpoints of an ensemble agree
on the clip format (:func:`check_members`), loading the fitted ensemble (:func:`load_ensemble`) and
the very checkpoints it was fitted with (:func:`members_of`), and the manipulation families the
checkpoints never trained on (:func:`absent_from_training`). Only ``meta.json`` files are read
here, never weights.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from data_pipeline.filters import Preprocessing, parse_preprocessing
from data_pipeline.pseudo_fakes import PSEUDO_METHOD
from ray_jobs import layout
from ray_jobs.checkpoints import FORMAT, FORMAT_VERSION, CheckpointError
from ray_jobs.config import StageChain
from ray_jobs.storage import Storage
from specialists.ensemble import Ensemble, EnsembleError
from specialists.registry import get_spec, list_specialists

#: model-config fields every checkpoint of one ensemble must share: they define the clips it reads
FORMAT_FIELDS = ("image_size", "num_frames", "audio_mels", "audio_steps")


@dataclass(frozen=True)
class Member:
    """One specialist checkpoint of the ensemble: where it is and its ``meta.json`` description."""

    specialist: str
    stage: str
    parts: tuple[str, ...]
    meta: dict[str, Any]
    display: str
    """The checkpoint folder as a user would write it (``s3://...`` or a local path)."""

    @property
    def model_config(self) -> dict[str, Any]:
        return self.meta.get("model_config", {})

    @property
    def preprocessing(self) -> Preprocessing:
        return parse_preprocessing(self.meta.get("recipe", {}).get("preprocessing", "resize"))

    def record(self) -> dict[str, Any]:
        """What the ensemble file keeps about this checkpoint (and checks again when loading)."""
        return {"stage": self.stage, "parts": list(self.parts), "checkpoint": self.display,
                "epoch": self.meta.get("epoch"), "created": self.meta.get("created"),
                "backbone": self.model_config.get("backbone"), "preprocessing": self.preprocessing.value,
                "val_auc": self.meta.get("metrics", {}).get("val_auc")}


def read_member(storage: Storage, specialist: str, stage: str, parts: Sequence[str]) -> Member:
    """A checkpoint's description from its ``meta.json`` (no weights are read)."""
    display = storage.display(*parts)
    try:
        meta = storage.read_json(*parts, layout.META_FILE)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {display}: cannot read {layout.META_FILE} "
                              f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {display} is not an Interceptor specialist checkpoint")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {display} has format version {meta.get('format_version')}, "
                              f"this build reads {FORMAT_VERSION}")
    if meta.get("specialist") != specialist:
        raise CheckpointError(f"checkpoint {display} holds specialist {meta.get('specialist')!r}, not {specialist!r}")
    return Member(specialist, stage, tuple(parts), meta, display)


def discover_members(storage: Storage, name: str, chain: StageChain,
                     specialists: Sequence[str] | None = None) -> list[Member]:
    """For each specialist (default: every registered one), its latest complete stage in chain order.

    Specialists with no complete stage are left out (the ensemble uses whichever exist).
    """
    keys = list(specialists) if specialists else list_specialists()
    members = []
    for key in keys:
        get_spec(key)
        for stage in reversed(chain.stages):
            parts = layout.final_parts(name, key, stage.name)
            if storage.exists(*parts, layout.COMPLETE_FILE):
                members.append(read_member(storage, key, stage.name, parts))
                break
    return members


def check_members(members: Sequence[Member]) -> dict[str, Any]:
    """Refuse an ensemble whose checkpoints disagree on the clip format; returns the shared format.

    Every checkpoint must read the same clips (:data:`FORMAT_FIELDS`: image size, frames per clip,
    audio window); the error names the first checkpoint that differs and the one it differs from.
    """
    if not members:
        raise CheckpointError("the ensemble has no specialist checkpoints")
    ref = members[0]
    for m in members[1:]:
        for key in FORMAT_FIELDS:
            have, want = m.model_config.get(key), ref.model_config.get(key)
            if have != want:
                raise CheckpointError(
                    f"checkpoint {m.display} does not fit the ensemble: its {key} is {have} but "
                    f"{ref.display} has {want} (all specialists of one ensemble must read the same clips)")
    return {key: ref.model_config.get(key) for key in FORMAT_FIELDS}


def absent_from_training(members: Sequence[Member], families: Iterable[str]) -> set[str]:
    """The families of ``families`` (the evaluated fakes' ``method`` values) the ensemble's
    checkpoints never trained on, whose scores therefore measure generalisation.

    A family is absent when any checkpoint held it out (``extra.hold_out``: the leave-one-family-out
    protocol), or when every checkpoint records the families it trained on through its stage chain
    (``extra.trained_methods``) and none of them lists it. Older checkpoints record neither, and
    nothing is known from them. On-the-fly pseudo-fakes (:data:`~data_pipeline.pseudo_fakes.PSEUDO_METHOD`) are never evaluated.
    """
    extras = [m.meta.get("extra") or {} for m in members]
    held = {str(f) for e in extras for f in e.get("hold_out") or []}
    families = {str(f) for f in families} - set(PSEUDO_METHOD.values())
    absent = families & held
    if extras and all(e.get("trained_methods") is not None for e in extras):
        trained = {str(f) for e in extras for f in e["trained_methods"]}
        absent |= families - trained
    return absent


def load_ensemble(storage: Storage, name: str) -> Ensemble:
    """The fitted ensemble of experiment ``name`` (one-line error when there is none)."""
    parts = layout.ensemble_parts(name)
    if not storage.exists(*parts):
        raise EnsembleError(f"no fitted ensemble at {storage.display(*parts)} "
                            f"(run interceptor evaluate first: it fits the ensemble on the validation split)")
    try:
        data = storage.read_json(*parts)
    except ValueError as e:
        raise EnsembleError(f"{storage.display(*parts)} is not valid JSON ({e})") from None
    return Ensemble.from_dict(data, storage.display(*parts))


def members_of(ensemble: Ensemble, storage: Storage) -> list[Member]:
    """The checkpoints an ensemble was fitted with, checked to be the very same ones (epoch and
    creation time); a retrained checkpoint needs a refit."""
    records = ensemble.extra.get("checkpoints", {})
    members = []
    for key in ensemble.specialists:
        rec = records.get(key)
        if not rec:
            raise EnsembleError(f"the ensemble does not record which checkpoint of {key!r} it uses")
        parts = tuple(rec["parts"])
        if not storage.exists(*parts, layout.COMPLETE_FILE):
            raise CheckpointError(f"checkpoint {storage.display(*parts)} of the ensemble is missing or incomplete")
        m = read_member(storage, key, rec["stage"], parts)
        if (m.meta.get("epoch"), m.meta.get("created")) != (rec.get("epoch"), rec.get("created")):
            raise CheckpointError(f"checkpoint {m.display} changed since the ensemble was fitted "
                                  f"(created {rec.get('created')}, now {m.meta.get('created')}): "
                                  f"rerun interceptor evaluate to refit")
        members.append(m)
    return members
