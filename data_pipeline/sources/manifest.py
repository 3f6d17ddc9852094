"""One manifest schema for every dataset: one :class:`ManifestRow` per video.

The readers (:mod:`.ffpp`, :mod:`.celebdf`, :mod:`.dfdc`) turn a dataset root in its public layout
into a :class:`Manifest` (a ``list`` of rows that also carries the reader's :class:`Issue` list);
the package (``data_pipeline.sources``) maps a :class:`Dataset` to its reader. This module imports
no reader: it is the schema and the helpers they share.
Fields follow ``docs/architecture.md`` exactly.

Two rules hold for every reader:

* A video that the dataset's metadata lists but that is missing on disk is **kept** in the
  manifest (``row.exists`` is false); the preparation job reports it as skipped with reason
  ``"missing file"`` instead of dropping it silently.
* A video that cannot be placed at all (e.g. an FF++ id in no official split) is not a row: it is
  an :class:`Issue` with its path and reason, which the preparation job reports as a skip.

When the dataset root holds a ``synthetic_truth.json`` (written by the synthetic benchmark
generator), a fake's ``method`` is the synthetic manipulation family recorded there.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from enum import Enum
from typing import Any, Iterable

from ..filesystems import FsPath, is_s3

#: name of the ground-truth file the synthetic benchmark writes into each dataset root
SYNTHETIC_TRUTH = "synthetic_truth.json"

SPLITS = ("train", "val", "test")


class Dataset(str, Enum):
    """The three supported datasets (their values are the ``dataset`` manifest field)."""

    FFPP = "ffpp"
    CELEBDF = "celebdf"
    DFDC = "dfdc"

    def __str__(self) -> str:  # pragma: no cover - cosmetic
        return self.value


class ManifestError(ValueError):
    """A dataset root or its metadata cannot be read (the message is one clear line)."""


@dataclass(frozen=True)
class ManifestRow:
    """One video. Field names and meanings are the manifest contract of ``docs/architecture.md``.

    Attributes:
        video_id: unique within the dataset: the path relative to the dataset root (POSIX).
        path: the video file: an absolute local path or an ``s3://`` URI.
        dataset: ``ffpp``, ``celebdf`` or ``dfdc``.
        label: 0 real, 1 fake.
        method: ``real`` for real videos, otherwise the manipulation.
        group: source identity; a fake and the real it was made from share it.
        split: ``train``, ``val`` or ``test``.
        chunk: DFDC chunk index (group of ``dfdc_train_part_N`` folders); 0 elsewhere.
        original: for a fake, the path of the real video it was made from where the dataset says
            (FF++: the target's video; DFDC: metadata ``original``); ``""`` otherwise. Preparation
            compares a several-face fake with it to tell which face was manipulated.
    """

    video_id: str
    path: str
    dataset: str
    label: int
    method: str
    group: str
    split: str
    chunk: int = 0
    original: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The row as a plain dict (the manifest columns of a clip row)."""
        return dataclasses.asdict(self)

    @property
    def exists(self) -> bool:
        """Whether the video file is present (on disk, or in its bucket: S3 endpoint from ``AWS_ENDPOINT_URL``)."""
        return FsPath.of(self.path).is_file() if is_s3(self.path) else os.path.isfile(self.path)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ManifestRow":
        """Build a row from a dict holding (at least) the manifest fields."""
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls)})


#: manifest field names, in contract order
MANIFEST_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(ManifestRow))


@dataclass(frozen=True)
class Issue:
    """A video found by a reader that cannot become a manifest row (reported, never dropped)."""

    path: str
    reason: str


class Manifest(list):
    """A ``list[ManifestRow]`` that also carries the reader's :class:`Issue` list."""

    def __init__(self, rows: Iterable[ManifestRow] = (), issues: Iterable[Issue] = ()) -> None:
        super().__init__(rows)
        self.issues: list[Issue] = list(issues)

    @property
    def missing(self) -> list[ManifestRow]:
        """Rows whose video file is absent on disk."""
        return [r for r in self if not r.exists]


def stable_fraction(key: str) -> float:
    """A deterministic number in ``[0, 1)`` from ``key`` (sha1; independent of ``PYTHONHASHSEED``)."""
    digest = hashlib.sha1(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_splits(
    groups: Iterable[str], val_fraction: float, test_fraction: float = 0.0, salt: str = ""
) -> dict[str, str]:
    """Assign each group to ``train``/``val``/``test`` by hashing it, so no group spans two splits.

    A group goes to ``test`` when its hash fraction is below ``test_fraction``, to ``val`` when it
    is below ``test_fraction + val_fraction``, else to ``train``. The assignment of a group does
    not depend on the other groups, so it is stable as a dataset grows. Small datasets: when a
    requested split would be empty although there are enough groups, the train groups with the
    lowest hashes are moved into it (deterministically), so tiny benchmarks still get a
    validation split.
    """
    if not 0.0 <= val_fraction < 1.0 or not 0.0 <= test_fraction < 1.0 or val_fraction + test_fraction >= 1.0:
        raise ManifestError(f"bad split fractions: val={val_fraction}, test={test_fraction}")
    keys = sorted(set(groups))
    frac = {g: stable_fraction(salt + g) for g in keys}
    out: dict[str, str] = {}
    for g in keys:
        f = frac[g]
        out[g] = "test" if f < test_fraction else "val" if f < test_fraction + val_fraction else "train"
    for split, wanted in (("test", test_fraction), ("val", val_fraction)):
        if wanted > 0 and split not in out.values():
            train = sorted((g for g in keys if out[g] == "train"), key=lambda g: frac[g])
            if len(train) >= 2:  # keep at least one train group
                out[train[0]] = split
    return out


def relative_id(root: FsPath, path: FsPath) -> str:
    """The ``video_id`` of ``path``: its path relative to ``root`` with POSIX separators."""
    return path.relative_to(root).as_posix()


def load_synthetic_truth(root: FsPath) -> dict[str, dict[str, Any]] | None:
    """The synthetic benchmark's ground truth of ``root``, or ``None`` for a real dataset."""
    path = root / SYNTHETIC_TRUTH
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ManifestError(f"{path}: unreadable synthetic truth ({exc})") from exc
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: expected a JSON object of video_id -> truth")
    return data


def apply_synthetic_truth(manifest: Manifest, root: FsPath) -> Manifest:
    """Apply a synthetic benchmark's ``synthetic_truth.json`` (no-op for a real dataset).

    * Each fake's ``method`` becomes its synthetic family.
    * The truth file lists every video of the benchmark, so a row that a reader only *inferred*
      (e.g. an FF++ fake ``a_b`` of a method the generator did not apply to that pair) and that
      is neither in the truth file nor on disk is not part of the dataset and is removed. A
      video the truth file lists but that is missing on disk stays (reported as missing).
    """
    truth = load_synthetic_truth(root)
    if truth is None:
        return manifest
    rows = []
    for row in manifest:
        entry = truth.get(row.video_id)
        if entry is None and not (root / row.video_id).is_file():
            continue
        if row.label == 1 and isinstance(entry, dict) and entry.get("family"):
            row = dataclasses.replace(row, method=str(entry["family"]))
        rows.append(row)
    return Manifest(rows, manifest.issues)
