"""FaceForensics++ reader.

Layout (as downloaded by the official script)::

    <root>/original_sequences/youtube/<c23|c40|raw>/videos/000.mp4
    <root>/manipulated_sequences/<Method>/<c23|c40|raw>/videos/000_003.mp4
    <root>/splits/train.json, val.json, test.json      (path configurable: ``splits_dir``)

The official split files are JSON lists of ``[target, source]`` pairs of 3-digit ids. Pair
``[a, b]`` covers the real videos ``a`` and ``b`` and, for every manipulation method, the fakes
``a_b`` and ``b_a``. ``group`` is the *target* id (the first id of a fake's name; a real video's
own id), so a fake shares its group with the real video it was made from, and a pair never spans
two splits.

Every video the split files list is a manifest row, present on disk or not (missing ones are
reported by the preparation job). Videos on disk that no split lists are :class:`Issue` s.
"""

from __future__ import annotations

import json
import re
from typing import Sequence

from ..filesystems import FsPath
from .manifest import Dataset, Issue, Manifest, ManifestError, ManifestRow

COMPRESSIONS = ("c23", "c40", "raw")
#: the pair-based manipulation methods the official split files cover
PAIR_METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures", "FaceShifter")
#: method folders of the full download that the split files do not cover (actor-based videos)
NON_PAIR_METHODS = ("DeepFakeDetection",)

_ID = re.compile(r"^\d{3}$")
_FAKE_NAME = re.compile(r"^(\d{3})_(\d{3})$")


def read_split_files(splits_dir: FsPath) -> dict[str, list[tuple[str, str]]]:
    """Read ``train/val/test.json`` from ``splits_dir`` -> ``{split: [(target, source), ...]}``."""
    out: dict[str, list[tuple[str, str]]] = {}
    for split in ("train", "val", "test"):
        path = splits_dir / f"{split}.json"
        if not path.is_file():
            raise ManifestError(
                f"FF++ split file {str(path)!r} not found (pass splits_dir= the folder holding train/val/test.json)"
            )
        try:
            pairs = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ManifestError(f"FF++ split file {str(path)!r} is not valid JSON ({exc})") from None
        if not isinstance(pairs, list) or not all(
            isinstance(p, list) and len(p) == 2 and all(isinstance(i, str) and _ID.match(i) for i in p) for p in pairs
        ):
            raise ManifestError(f"FF++ split file {str(path)!r}: expected a list of [target, source] 3-digit id pairs")
        out[split] = [(a, b) for a, b in pairs]
    return out


def _id_splits(pairs_by_split: dict[str, list[tuple[str, str]]]) -> dict[str, str]:
    """``{id: split}`` for every id of every pair; an id in two splits is an error."""
    id_split: dict[str, str] = {}
    for split, pairs in pairs_by_split.items():
        for pair in pairs:
            for vid in pair:
                other = id_split.setdefault(vid, split)
                if other != split:
                    raise ManifestError(f"FF++ splits overlap: id {vid} is in both {other} and {split}")
    return id_split


def _present_methods(root: FsPath, compression: str) -> list[str]:
    base = root / "manipulated_sequences"
    if not base.is_dir():
        return []
    return sorted(
        p.name for p in base.iterdir() if p.is_dir() and p.name not in NON_PAIR_METHODS and (p / compression).is_dir()
    )


def _check_root(root: FsPath, compression: str, fakes: str) -> None:
    """Reject an unknown ``fakes`` or ``compression`` value and a root that does not look like FF++."""
    if fakes not in ("split", "present"):
        raise ManifestError(f"FF++ fakes={fakes!r} unknown; use 'split' or 'present'")
    if compression not in COMPRESSIONS:
        raise ManifestError(f"FF++ compression {compression!r} unknown; use one of {', '.join(COMPRESSIONS)}")
    if not (root / "original_sequences").is_dir() and not (root / "manipulated_sequences").is_dir():
        raise ManifestError(f"{str(root)!r} does not look like FF++ (no original_sequences/ or manipulated_sequences/)")


def _resolve_methods(root: FsPath, compression: str, methods: Sequence[str] | str | None) -> Sequence[str]:
    """The method folders to read: ``methods`` (a list or a comma-separated string), each checked to be
    a pair-based folder present for ``compression``; default every such folder present."""
    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    if methods is None:
        return _present_methods(root, compression)
    bad = [m for m in methods if m in NON_PAIR_METHODS]
    if bad:
        raise ManifestError(f"FF++ method(s) {', '.join(bad)} are not covered by the pair split files")
    absent = [m for m in methods if not (root / "manipulated_sequences" / m / compression).is_dir()]
    if absent:
        raise ManifestError(
            f"FF++ method folder(s) not found for {compression}: "
            + ", ".join(str(root / "manipulated_sequences" / m / compression) for m in absent)
        )
    return methods


def _fake_dir(root: FsPath, method: str, compression: str) -> FsPath:
    return root / "manipulated_sequences" / method / compression / "videos"


def _row(root: FsPath, path: FsPath, label: int, method: str, group: str, split: str,
         original: str = "") -> ManifestRow:
    return ManifestRow(
        video_id=path.relative_to(root).as_posix(),
        path=str(path),
        dataset=Dataset.FFPP.value,
        label=label,
        method=method,
        group=group,
        split=split,
        original=original,
    )


def _listed_rows(root: FsPath, real_dir: FsPath, methods: Sequence[str], compression: str,
                 pairs_by_split: dict[str, list[tuple[str, str]]], fakes: str) -> list[ManifestRow]:
    """A row for every video the split files list: each id's real video, and both fakes of each
    pair per method (with ``fakes="present"``, only the fakes on disk)."""
    rows: list[ManifestRow] = []
    # real videos: every id of every pair
    for vid, split in sorted(_id_splits(pairs_by_split).items()):
        rows.append(_row(root, real_dir / f"{vid}.mp4", 0, "real", vid, split))
    # fakes: a_b and b_a of each pair, per method
    for method in methods:
        fake_dir = _fake_dir(root, method, compression)
        for split, pairs in pairs_by_split.items():
            for a, b in pairs:
                for target, source in ((a, b), (b, a)):
                    path = fake_dir / f"{target}_{source}.mp4"
                    if fakes == "split" or path.is_file():
                        rows.append(_row(root, path, 1, method, target, split, str(real_dir / f"{target}.mp4")))
    return rows


def _unlisted_issues(folders: list[tuple[FsPath, re.Pattern[str]]], listed: set[str]) -> list[Issue]:
    """An :class:`Issue` for every ``.mp4`` in ``folders`` that no split lists (``listed`` paths).
    Each folder comes with the file-name pattern of its videos (real ids or fake pairs)."""
    issues: list[Issue] = []
    for folder, pattern in folders:
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.mp4")):
            if str(path) in listed:
                continue
            if not pattern.match(path.stem):
                issues.append(Issue(str(path), "unrecognised FF++ file name"))
            elif pattern is _ID:
                issues.append(Issue(str(path), f"real id {path.stem} not in any split"))
            else:
                issues.append(Issue(str(path), f"pair {path.stem} not in any split"))
    return issues


def read(
    root: FsPath,
    compression: str = "c23",
    methods: list[str] | tuple[str, ...] | str | None = None,
    splits_dir: str | None = None,
    fakes: str = "split",
) -> Manifest:
    """Read an FF++ root.

    Args:
        root: dataset root (a listed :class:`~data_pipeline.filesystems.FsPath`).
        compression: ``c23`` (default), ``c40`` or ``raw``.
        methods: manipulation method folders to include (a list or a comma-separated string);
            default every pair-based method folder present for this compression.
        splits_dir: folder of the official ``train/val/test.json`` (a local path or an ``s3://`` URI);
            default ``<root>/splits``.
        fakes: ``"split"`` (default): every fake of every pair and method is expected, and one
            missing on disk is kept (reported as missing); ``"present"``: only the fakes found on
            disk (a partial download, e.g. the official script's ``--num_videos``).
    """
    _check_root(root, compression, fakes)
    chosen = _resolve_methods(root, compression, methods)
    real_dir = root / "original_sequences" / "youtube" / compression / "videos"
    pairs_by_split = read_split_files(root.at(splits_dir) if splits_dir else root / "splits")
    rows = _listed_rows(root, real_dir, chosen, compression, pairs_by_split, fakes)
    # videos on disk that no split lists
    folders = [(real_dir, _ID)] + [(_fake_dir(root, m, compression), _FAKE_NAME) for m in chosen]
    return Manifest(rows, _unlisted_issues(folders, {r.path for r in rows}))
