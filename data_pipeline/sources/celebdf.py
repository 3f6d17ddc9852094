"""Celeb-DF v2 reader.

Layout::

    <root>/Celeb-real/id0_0000.mp4          real, celebrity id0, its video 0000
    <root>/YouTube-real/00000.mp4           real, no identity given
    <root>/Celeb-synthesis/id0_id16_0000.mp4  fake: the face of id16 swapped onto Celeb-real/id0_0000.mp4
    <root>/List_of_testing_videos.txt       official test list, lines "<label> <subdir>/<name>.mp4"

**The test list's labels are inverted** with respect to this project: ``1`` means REAL and ``0``
FAKE. The label of a row always comes from its folder; the list's label is only checked against it
(a disagreement is an error, which catches a list written in the usual convention).

Split: the test list defines ``test``; every other video goes to ``train`` or ``val`` by hashing
its *group*, so a group never spans train and val.

Group (identity) choice: a fake ``idA_idB_k`` is grouped with **idA**, the *target* identity whose
real video ``Celeb-real/idA_k.mp4`` it was made from; a real ``idA_k`` is grouped with ``idA``. So
every fake lands in the same split as its real source video (and as every other video of that
celebrity). The swapped-in identity idB may still appear in another split; Celeb-DF's own test
protocol has the same property. ``YouTube-real`` videos have no identity: each is its own group
``youtube-<name>``.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from ..filesystems import FsPath
from .manifest import Dataset, Issue, Manifest, ManifestError, ManifestRow, assign_splits

REAL_DIRS = ("Celeb-real", "YouTube-real")
FAKE_DIR = "Celeb-synthesis"
TEST_LIST = "List_of_testing_videos.txt"
METHOD = "Celeb-synthesis"

_CELEB_REAL = re.compile(r"^(id\d+)_\d+$")
_CELEB_FAKE = re.compile(r"^(id\d+)_(id\d+)_\d+$")


def group_of(subdir: str, stem: str) -> str:
    """The identity group of the video ``<subdir>/<stem>.mp4`` (see the module docstring)."""
    if subdir == FAKE_DIR:
        m = _CELEB_FAKE.match(stem)
        return m.group(1) if m else stem
    if subdir == "Celeb-real":
        m = _CELEB_REAL.match(stem)
        return m.group(1) if m else stem
    return f"youtube-{stem}"


def read_test_list(path: FsPath) -> dict[str, int]:
    """Parse the official test list -> ``{"<subdir>/<name>.mp4": label}`` in THIS project's
    convention (0 real, 1 fake), i.e. the file's labels inverted."""
    if not path.is_file():
        raise ManifestError(f"Celeb-DF test list {str(path)!r} not found (pass test_list= its path)")
    out: dict[str, int] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or parts[0] not in ("0", "1"):
            raise ManifestError(f"{path}:{n}: expected '<0|1> <subdir>/<name>.mp4', got {line.strip()!r}")
        out[parts[1]] = 0 if parts[0] == "1" else 1  # official: 1 = REAL
    return out


def read(root: FsPath, val_fraction: float = 0.1, test_list: str | None = None) -> Manifest:
    """Read a Celeb-DF v2 root.

    Args:
        root: dataset root (a listed :class:`~data_pipeline.filesystems.FsPath`).
        val_fraction: fraction of the non-test groups that go to ``val`` (deterministic by hash).
        test_list: path of ``List_of_testing_videos.txt``; default ``<root>/List_of_testing_videos.txt``.
    """
    if not any((root / d).is_dir() for d in (*REAL_DIRS, FAKE_DIR)):
        raise ManifestError(f"{str(root)!r} does not look like Celeb-DF (no {', '.join((*REAL_DIRS, FAKE_DIR))})")
    tests = read_test_list(root.at(test_list) if test_list else root / TEST_LIST)
    ds = Dataset.CELEBDF.value
    issues: list[Issue] = []

    # (video_id, label, group) of every video: listed in the test list or found on disk
    videos: dict[str, tuple[int, str]] = {}
    bad_labels = 0
    for vid, listed_label in tests.items():
        subdir, _, name = vid.partition("/")
        if subdir not in (*REAL_DIRS, FAKE_DIR) or "/" in name or not name:
            issues.append(Issue(str(root / vid), "test list entry outside Celeb-real/YouTube-real/Celeb-synthesis"))
            continue
        label = 1 if subdir == FAKE_DIR else 0
        bad_labels += label != listed_label
        videos[vid] = (label, group_of(subdir, PurePosixPath(name).stem))
    if bad_labels:
        raise ManifestError(
            f"Celeb-DF test list: {bad_labels} label(s) disagree with their folder "
            "(the official list uses 1 = REAL, 0 = FAKE)"
        )
    for subdir in (*REAL_DIRS, FAKE_DIR):
        folder = root / subdir
        if folder.is_dir():
            for path in sorted(folder.glob("*.mp4")):
                vid = f"{subdir}/{path.name}"
                videos.setdefault(vid, (1 if subdir == FAKE_DIR else 0, group_of(subdir, path.stem)))

    trainval_groups = {group for vid, (_, group) in videos.items() if vid not in tests}
    split_of = assign_splits(trainval_groups, val_fraction=val_fraction, salt="celebdf:")
    rows = [
        ManifestRow(
            video_id=vid,
            path=str(root / vid),
            dataset=ds,
            label=label,
            method=METHOD if label else "real",
            group=group,
            split="test" if vid in tests else split_of[group],
        )
        for vid, (label, group) in sorted(videos.items())
    ]
    return Manifest(rows, issues)
