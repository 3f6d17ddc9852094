"""Dataset layouts: which videos the FF++, Celeb-DF v2 and DFDC folders hold (the plans), their
metadata files in the real formats, and each dataset's ``synthetic_truth.json``."""

from __future__ import annotations

import json
import os
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .config import _NORMAL_FAMILIES, FAMILY_FOLDERS, SynthConfig, _rng

# =============================================================================== dataset plans


@dataclass
class _Video:
    """One file to write: where it goes and what the truth file says about it."""

    rel: str
    """Path relative to the dataset root (the manifest's ``video_id``)."""
    label: int
    family: str
    group: str


@dataclass
class _Task:
    """A real video and the fakes derived from it: rendered and written by one worker."""

    dataset: str
    root: str
    real: _Video
    identity_key: str
    scene_key: str
    low_light: bool
    fakes: list[tuple[_Video, str]] = field(default_factory=list)
    """(fake, source identity key) pairs."""
    persons: int = 1
    """People in the video (2: a DFDC two-person video, see :mod:`.pairs`)."""
    fake_faces: list[int] = field(default_factory=list)
    """Two-person videos: the person (0 left, 1 right) each fake manipulates, one per fake."""


def _families_for(cfg: SynthConfig, normal_index: int) -> list[str]:
    """Families applied to the ``normal_index``-th normal-light real of a dataset (rotating)."""
    fams = [f for f in _NORMAL_FAMILIES if f in cfg.families]
    if not fams:
        return []
    k = len(fams) if cfg.fakes_per_real is None else min(cfg.fakes_per_real, len(fams))
    return [fams[(normal_index * k + j) % len(fams)] for j in range(k)]


def _dark_flags(rng: np.random.Generator, n: int, fraction: float) -> list[bool]:
    n_dark = int(round(n * fraction))
    flags = np.zeros(n, bool)
    flags[rng.permutation(n)[:n_dark]] = True
    return [bool(f) for f in flags]


def _split_counts(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int, int]:
    """(train, val, test) counts of ``n`` items; train keeps at least one item when n > 0."""
    n_test = min(n, int(round(n * test_fraction)))
    if test_fraction > 0 and n >= 2:
        n_test = max(1, n_test)
    n_val = min(n - n_test, int(round(n * val_fraction)))
    if val_fraction > 0 and n - n_test >= 2:
        n_val = max(1, n_val)
    if n > 0 and n - n_test - n_val < 1:
        if n_val > 0:
            n_val -= 1
        else:
            n_test -= 1
    return n - n_val - n_test, n_val, n_test


def _plan_ffpp(cfg: SynthConfig, root: Path) -> tuple[list[_Task], dict[str, Any]]:
    rng = _rng(cfg.seed, "ffpp", "plan")
    ids = [f"{int(i):03d}" for i in rng.choice(1000, 2 * cfg.ffpp_pairs, replace=False)]
    pairs = [(ids[2 * p], ids[2 * p + 1]) for p in range(cfg.ffpp_pairs)]
    dark = _dark_flags(rng, len(pairs), cfg.low_light_fraction)
    tasks: list[_Task] = []
    normal_index = 0
    for (a, b), is_dark in zip(pairs, dark):
        for target, source in ((a, b), (b, a)):
            real = _Video(f"original_sequences/youtube/c23/videos/{target}.mp4", 0, "real", target)
            task = _Task("ffpp", str(root), real, identity_key=target, scene_key=target, low_light=is_dark)
            fams = (["low_light"] if "low_light" in cfg.families else []) if is_dark else _families_for(cfg, normal_index)
            normal_index += 0 if is_dark else 1
            for fam in fams:
                rel = f"manipulated_sequences/{FAMILY_FOLDERS[fam]}/c23/videos/{target}_{source}.mp4"
                task.fakes.append((_Video(rel, 1, fam, target), source))
            tasks.append(task)
    # official-format splits; normal and low-light pairs are interleaved in proportion before
    # cutting test / val / train, so that each split gets its share of both captures
    keyed = []
    for want_dark in (False, True):
        group = [p for p, d in zip(pairs, dark) if d == want_dark]
        order = rng.permutation(len(group))
        keyed += [((j + 0.5) / len(group), want_dark, group[i]) for j, i in enumerate(order)]
    ordered = [p for _, _, p in sorted(keyed, key=lambda x: (x[0], x[1]))]
    _, n_val, n_test = _split_counts(len(ordered), cfg.val_fraction, cfg.test_fraction)
    splits = {
        "train": [list(p) for p in ordered[n_test + n_val :]],
        "val": [list(p) for p in ordered[n_test : n_test + n_val]],
        "test": [list(p) for p in ordered[:n_test]],
    }
    return tasks, {"splits": splits}


def _plan_celebdf(cfg: SynthConfig, root: Path) -> tuple[list[_Task], dict[str, Any]]:
    rng = _rng(cfg.seed, "celebdf", "plan")
    n_id, n_vid = cfg.celebdf_identities, cfg.celebdf_videos_per_identity
    per_real = len(_families_for(cfg, 0))
    if n_id - 1 < max(per_real, 1):
        raise ValueError(f"celebdf_identities={n_id} must exceed the families per real ({per_real})")
    celeb = [(i, k) for i in range(n_id) for k in range(n_vid)]
    dark = _dark_flags(rng, len(celeb), cfg.low_light_fraction)
    tasks: list[_Task] = []
    normal_index = 0
    for (i, k), is_dark in zip(celeb, dark):
        name = f"id{i}_{k:04d}"
        real = _Video(f"Celeb-real/{name}.mp4", 0, "real", f"id{i}")
        task = _Task("celebdf", str(root), real, identity_key=f"id{i}", scene_key=name, low_light=is_dark)
        fams = (["low_light"] if "low_light" in cfg.families else []) if is_dark else _families_for(cfg, normal_index)
        normal_index += 0 if is_dark else 1
        others = [j for j in range(n_id) if j != i]
        sources = [others[j] for j in rng.permutation(len(others))[: len(fams)]]
        for fam, j in zip(fams, sources):
            rel = f"Celeb-synthesis/id{i}_id{j}_{k:04d}.mp4"
            task.fakes.append((_Video(rel, 1, fam, f"id{i}"), f"id{j}"))
        tasks.append(task)
    yt_dark = _dark_flags(rng, cfg.celebdf_youtube, cfg.low_light_fraction)
    for n, is_dark in enumerate(yt_dark):
        name = f"{n:05d}"
        real = _Video(f"YouTube-real/{name}.mp4", 0, "real", f"yt{name}")
        tasks.append(_Task("celebdf", str(root), real, identity_key=f"yt{name}", scene_key=f"yt{name}", low_light=is_dark))
    # test list: whole identities (their reals and the fakes made from them) + some YouTube reals
    _, _, n_test_ids = _split_counts(n_id, 0.0, cfg.test_fraction)
    test_ids = {int(i) for i in rng.permutation(n_id)[:n_test_ids]}
    _, _, n_test_yt = _split_counts(cfg.celebdf_youtube, 0.0, cfg.test_fraction)
    test_yt = {int(i) for i in rng.permutation(cfg.celebdf_youtube)[:n_test_yt]}
    lines = [f"1 YouTube-real/{n:05d}.mp4" for n in sorted(test_yt)]
    for t in tasks:
        if t.real.rel.startswith("Celeb-real/") and int(t.identity_key[2:]) in test_ids:
            lines.append(f"1 {t.real.rel}")
    for t in tasks:
        if t.real.rel.startswith("Celeb-real/") and int(t.identity_key[2:]) in test_ids:
            lines += [f"0 {fake.rel}" for fake, _ in t.fakes]
    return tasks, {"test_list": lines}


def _random_name(rng: np.random.Generator, taken: set[str]) -> str:
    letters = np.array(list(string.ascii_lowercase))
    while True:
        name = "".join(rng.choice(letters, 10))
        if name not in taken:
            taken.add(name)
            return name


def _plan_dfdc(cfg: SynthConfig, root: Path) -> tuple[list[_Task], dict[str, Any]]:
    rng = _rng(cfg.seed, "dfdc", "plan")
    n_real = cfg.dfdc_parts * cfg.dfdc_reals_per_part
    dark = _dark_flags(rng, n_real, cfg.low_light_fraction)
    taken: set[str] = set()
    reals = [(k, _random_name(rng, taken)) for k in range(cfg.dfdc_parts) for _ in range(cfg.dfdc_reals_per_part)]
    tasks: list[_Task] = []
    metadata: dict[int, dict[str, dict[str, Any]]] = {k: {} for k in range(cfg.dfdc_parts)}
    normal_index = 0
    for r, ((part, name), is_dark) in enumerate(zip(reals, dark)):
        folder = f"dfdc_train_part_{part}"
        real = _Video(f"{folder}/{name}.mp4", 0, "real", f"{name}.mp4")
        task = _Task("dfdc", str(root), real, identity_key=name, scene_key=name, low_light=is_dark)
        metadata[part][f"{name}.mp4"] = {"label": "REAL", "split": "train", "original": None}
        fams = (["low_light"] if "low_light" in cfg.families else []) if is_dark else _families_for(cfg, normal_index)
        normal_index += 0 if is_dark else 1
        others = [o for o in range(n_real) if o != r]
        for fam in fams:
            source = reals[others[int(rng.integers(len(others)))]][1] if others else f"{name}-src"
            fake_name = _random_name(rng, taken)
            task.fakes.append((_Video(f"{folder}/{fake_name}.mp4", 1, fam, f"{name}.mp4"), source))
            metadata[part][f"{fake_name}.mp4"] = {"label": "FAKE", "split": "train", "original": f"{name}.mp4"}
        tasks.append(task)
    _plan_two_person(cfg, tasks)
    return tasks, {"metadata": metadata}


def _plan_two_person(cfg: SynthConfig, tasks: list[_Task]) -> None:
    """Make ``cfg.dfdc_two_person_fraction`` of the DFDC reals two-person videos and choose the
    manipulated face of each of their fakes: a seeded first face, then alternating, so both faces
    occur (a real's family rotation and its faces are independent). Draws from its own generator:
    the rest of the plan does not depend on the fraction."""
    rng = _rng(cfg.seed, "dfdc", "persons")
    for task, two in zip(tasks, _dark_flags(rng, len(tasks), cfg.dfdc_two_person_fraction)):
        start = int(rng.integers(2))
        if two:
            task.persons = 2
            task.fake_faces = [(start + j) % 2 for j in range(len(task.fakes))]


_PLANNERS: dict[str, Callable[[SynthConfig, Path], tuple[list[_Task], dict[str, Any]]]] = {
    "ffpp": _plan_ffpp,
    "celebdf": _plan_celebdf,
    "dfdc": _plan_dfdc,
}


# =============================================================================== metadata and truth files


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _write_json(path: Path, obj: Any, **kw: Any) -> None:
    _write_text(path, json.dumps(obj, **kw))


def _write_metadata(dataset: str, root: Path, extra: dict[str, Any]) -> None:
    if dataset == "ffpp":
        for split, pairs in extra["splits"].items():
            _write_json(root / "splits" / f"{split}.json", pairs, indent=2)
    elif dataset == "celebdf":
        _write_text(root / "List_of_testing_videos.txt", "\n".join(extra["test_list"]))  # no trailing newline
    elif dataset == "dfdc":
        for part, meta in extra["metadata"].items():
            _write_json(root / f"dfdc_train_part_{part}" / "metadata.json", dict(sorted(meta.items())),
                        separators=(",", ":"))


def _write_truth(root: Path, entries: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Write a dataset's ``synthetic_truth.json`` (sorted by video id); return its summary counts."""
    truth = dict(sorted(entries.items()))
    _write_json(root / "synthetic_truth.json", truth)
    fams: dict[str, int] = {}
    for entry in truth.values():
        fams[entry["family"]] = fams.get(entry["family"], 0) + 1
    return {
        "root": str(root),
        "videos": len(truth),
        "real": sum(1 for e in truth.values() if e["label"] == 0),
        "fake": sum(1 for e in truth.values() if e["label"] == 1),
        "low_light_real": sum(1 for e in truth.values() if e["label"] == 0 and e["light"] == "low"),
        "families": dict(sorted(fams.items())),
    }
