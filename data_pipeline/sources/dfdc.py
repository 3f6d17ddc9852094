"""DFDC (full training set) reader.

Layout (each of the 50 training zips extracts to one folder)::

    <root>/dfdc_train_part_<k>/metadata.json
    <root>/dfdc_train_part_<k>/<10 letters>.mp4

``metadata.json`` maps ``"<name>.mp4"`` to ``{"label": "REAL"|"FAKE", "split": "train",
"original": "<real>.mp4" | null}``. Its ``split`` is always ``train`` (the DFDC test sets were
released separately), so this reader makes its own split:

* group: a fake is grouped with its ``original`` (the real video it was made from), a real with
  itself. Video names are unique across all parts, so a fake and its original share the group even
  when they sit in different parts.
* split: by hashing the group (:func:`~.manifest.assign_splits`), so a group never spans two
  splits (no train/validation leak between a fake and its original).
* chunk: parts are sorted by their index ``k`` and numbered in groups of ``parts_per_chunk``
  (position in that order ``// parts_per_chunk``): with all 50 parts and 5 per chunk, parts 0-4
  are chunk 0, ..., parts 45-49 chunk 9.
"""

from __future__ import annotations

import json
import re
from pathlib import PurePosixPath
from typing import Any

from ..filesystems import FsPath
from .manifest import Dataset, Issue, Manifest, ManifestError, ManifestRow, assign_splits

PART_PREFIX = "dfdc_train_part_"
METHOD = "dfdc-fake"
_PART = re.compile(r"^dfdc_train_part_(\d+)$")


def list_parts(root: FsPath) -> list[tuple[int, FsPath]]:
    """``[(k, folder)]`` of the ``dfdc_train_part_<k>`` folders under ``root``, sorted by ``k``."""
    parts = []
    for p in root.iterdir():
        m = _PART.match(p.name)
        if m and p.is_dir():
            parts.append((int(m.group(1)), p))
    return sorted(parts)


def read_metadata(path: FsPath) -> dict[str, dict[str, Any]]:
    """Load one part's ``metadata.json`` (one-line :class:`ManifestError` when malformed)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ManifestError(f"DFDC metadata {str(path)!r} unreadable ({exc})") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ManifestError(f"DFDC metadata {str(path)!r}: expected an object of '<name>.mp4' -> {{label, original}}")
    return data


def read(
    root: FsPath, parts_per_chunk: int = 5, val_fraction: float = 0.1, test_fraction: float = 0.1
) -> Manifest:
    """Read a DFDC root.

    Args:
        root: dataset root holding the ``dfdc_train_part_<k>`` folders (a listed
            :class:`~data_pipeline.filesystems.FsPath`).
        parts_per_chunk: parts per training chunk (50 parts / 10 chunks = 5).
        val_fraction: fraction of groups assigned to ``val``.
        test_fraction: fraction of groups assigned to ``test``.
    """
    if parts_per_chunk < 1:
        raise ManifestError(f"parts_per_chunk must be >= 1, got {parts_per_chunk}")
    parts = list_parts(root)
    if not parts:
        raise ManifestError(f"{str(root)!r} does not look like DFDC (no {PART_PREFIX}<k>/ folders)")
    ds = Dataset.DFDC.value
    issues: list[Issue] = []
    entries: list[tuple[str, FsPath, int, str, int]] = []  # video_id, path, label, group, chunk
    for position, (_, folder) in enumerate(parts):
        chunk = position // parts_per_chunk
        meta_path = folder / "metadata.json"
        on_disk = {p.name for p in folder.glob("*.mp4")}
        if not meta_path.is_file():
            issues += [Issue(str(folder / n), f"{folder.name} has no metadata.json") for n in sorted(on_disk)]
            continue
        meta = read_metadata(meta_path)
        for name, info in sorted(meta.items()):
            path = folder / name
            label_text = str(info.get("label", "")).upper()
            if label_text not in ("REAL", "FAKE"):
                issues.append(Issue(str(path), f"metadata label {info.get('label')!r} is neither REAL nor FAKE"))
                continue
            label = int(label_text == "FAKE")
            original = info.get("original") if label else None
            group = PurePosixPath(original if isinstance(original, str) and original else name).stem
            source = str(folder / original) if isinstance(original, str) and original else ""
            entries.append((path.relative_to(root).as_posix(), path, label, group, chunk, source))
        for name in sorted(on_disk - set(meta)):
            issues.append(Issue(str(folder / name), f"not listed in {folder.name}/metadata.json"))

    split_of = assign_splits(
        (e[3] for e in entries), val_fraction=val_fraction, test_fraction=test_fraction, salt="dfdc:"
    )
    rows = [
        ManifestRow(
            video_id=vid,
            path=str(path),
            dataset=ds,
            label=label,
            method=METHOD if label else "real",
            group=group,
            split=split_of[group],
            chunk=chunk,
            original=source,
        )
        for vid, path, label, group, chunk, source in entries
    ]
    return Manifest(rows, issues)
