"""Dataset readers on the REAL metadata files in /work/shared/data with zero-byte placeholder videos."""

from __future__ import annotations

import json
import random
import shutil
import string
from collections import defaultdict
from pathlib import Path

import pytest

from data_pipeline.sources import Dataset, ManifestError, ManifestRow, read_manifest
from data_pipeline.sources.manifest import MANIFEST_FIELDS, assign_splits

REAL_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
if not REAL_DATA.is_dir():  # the shared folder sits beside the checkout
    REAL_DATA = Path("/work/shared/data")


def touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


# --------------------------------------------------------------------------- FF++


@pytest.fixture(scope="module")
def ffpp_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ffpp")
    shutil.copytree(REAL_DATA / "ff_splits", root / "splits")
    pairs = [p for s in ("train", "val", "test") for p in json.loads((root / "splits" / f"{s}.json").read_text())]
    for a, b in pairs:
        touch(root / "original_sequences/youtube/c23/videos" / f"{a}.mp4")
        touch(root / "original_sequences/youtube/c23/videos" / f"{b}.mp4")
        for method in ("Deepfakes", "FaceSwap"):
            touch(root / "manipulated_sequences" / method / "c23/videos" / f"{a}_{b}.mp4")
            touch(root / "manipulated_sequences" / method / "c23/videos" / f"{b}_{a}.mp4")
    touch(root / "manipulated_sequences/Face2Face/c40/videos/000_003.mp4")  # other compression only
    return root


def test_ffpp_real_split_sizes_and_pairs(ffpp_root: Path) -> None:
    rows = read_manifest("ffpp", ffpp_root)
    assert all(isinstance(r, ManifestRow) for r in rows)
    real_ids: dict[str, set[str]] = defaultdict(set)
    split_of_real = {}
    for r in rows:
        if r.label == 0:
            stem = Path(r.path).stem
            real_ids[r.split].add(stem)
            split_of_real[stem] = r.split
            assert r.method == "real" and r.group == stem
    assert {s: len(v) for s, v in real_ids.items()} == {"train": 720, "val": 140, "test": 140}
    fakes = [r for r in rows if r.label == 1]
    assert {r.method for r in fakes} == {"Deepfakes", "FaceSwap"}  # Face2Face has no c23 folder
    assert len(fakes) == 2 * 2 * 500
    for r in fakes:
        a, b = Path(r.path).stem.split("_")
        assert r.group == a
        assert r.split == split_of_real[a] == split_of_real[b], r
    assert all(r.exists and r.dataset == "ffpp" and r.chunk == 0 for r in rows)
    assert rows[0].video_id == Path(rows[0].path).relative_to(ffpp_root).as_posix()
    assert not rows.issues


def test_ffpp_options_missing_and_unsplit(ffpp_root: Path, tmp_path: Path) -> None:
    splits = tmp_path / "splits"
    shutil.copytree(ffpp_root / "splits", splits)
    test_pairs = json.loads((splits / "test.json").read_text())
    dropped = test_pairs.pop()
    (splits / "test.json").write_text(json.dumps(test_pairs))
    missing = ffpp_root / "manipulated_sequences/Deepfakes/c23/videos" / f"{test_pairs[0][0]}_{test_pairs[0][1]}.mp4"
    missing.unlink()
    try:
        rows = read_manifest(Dataset.FFPP, ffpp_root, methods="Deepfakes", splits_dir=splits)
        gone = [r for r in rows if not r.exists]
    finally:
        missing.touch()
    assert {r.method for r in rows if r.label} == {"Deepfakes"}
    assert sum(r.label == 0 and r.split == "test" for r in rows) == 138
    assert [r.path for r in gone] == [str(missing)]
    reasons = {Path(i.path).stem: i.reason for i in rows.issues}
    assert reasons[dropped[0]] == f"real id {dropped[0]} not in any split"
    assert reasons[f"{dropped[1]}_{dropped[0]}"] == f"pair {dropped[1]}_{dropped[0]} not in any split"


def test_ffpp_bad_input_is_one_line_error(ffpp_root: Path, tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="split file"):
        read_manifest("ffpp", ffpp_root, splits_dir=tmp_path)
    with pytest.raises(ManifestError, match="compression"):
        read_manifest("ffpp", ffpp_root, compression="c99")
    with pytest.raises(ManifestError, match="unknown option"):
        read_manifest("ffpp", ffpp_root, nonsense=1)
    with pytest.raises(ManifestError, match="unknown dataset"):
        read_manifest("imagenet", ffpp_root)
    with pytest.raises(ManifestError, match="not a directory"):
        read_manifest("ffpp", tmp_path / "nope")


# --------------------------------------------------------------------------- Celeb-DF


@pytest.fixture(scope="module")
def celebdf_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("celebdf")
    shutil.copy(REAL_DATA / "celebdf" / "List_of_testing_videos.txt", root)
    for line in (root / "List_of_testing_videos.txt").read_text().splitlines():
        touch(root / line.split()[1])
    # train/val material: 20 celebrities, 3 real videos each, fakes made from them
    for i in range(100, 120):
        for k in range(3):
            touch(root / "Celeb-real" / f"id{i}_{k:04d}.mp4")
            touch(root / "Celeb-synthesis" / f"id{i}_id{i + 1}_{k:04d}.mp4")
    for k in range(900, 910):
        touch(root / "YouTube-real" / f"{k:05d}.mp4")
    return root


def test_celebdf_test_split_and_groups(celebdf_root: Path) -> None:
    rows = read_manifest("celebdf", celebdf_root, val_fraction=0.2)
    test = [r for r in rows if r.split == "test"]
    assert sum(r.label == 0 for r in test) == 178
    assert sum(r.label == 1 for r in test) == 340
    assert all((r.label == 1) == r.video_id.startswith("Celeb-synthesis/") for r in rows)
    assert all(r.method == ("Celeb-synthesis" if r.label else "real") for r in rows)
    rest = [r for r in rows if r.split != "test"]
    assert {r.split for r in rest} == {"train", "val"}
    split_of_group: dict[str, set[str]] = defaultdict(set)
    for r in rest:
        split_of_group[r.group].add(r.split)
    assert all(len(s) == 1 for s in split_of_group.values())
    by_id = {r.video_id: r for r in rows}
    fake = by_id["Celeb-synthesis/id105_id106_0001.mp4"]
    real = by_id["Celeb-real/id105_0001.mp4"]
    assert fake.group == real.group == "id105" and fake.split == real.split
    assert by_id["YouTube-real/00900.mp4"].group == "youtube-00900"
    # deterministic
    assert read_manifest("celebdf", celebdf_root, val_fraction=0.2) == rows


def test_celebdf_missing_listed_video_is_kept(celebdf_root: Path, tmp_path: Path) -> None:
    listed = tmp_path / "list.txt"
    listed.write_text("1 Celeb-real/id0_0000.mp4\n0 Celeb-synthesis/id0_id1_9999.mp4")
    rows = read_manifest("celebdf", celebdf_root, test_list=listed)
    ghost = next(r for r in rows if r.video_id == "Celeb-synthesis/id0_id1_9999.mp4")
    assert ghost.split == "test" and ghost.label == 1 and not ghost.exists


def test_celebdf_inverted_labels_are_refused(celebdf_root: Path, tmp_path: Path) -> None:
    wrong = tmp_path / "list.txt"
    wrong.write_text("0 Celeb-real/id0_0000.mp4\n")  # usual convention: wrong for Celeb-DF
    with pytest.raises(ManifestError, match="1 = REAL"):
        read_manifest("celebdf", celebdf_root, test_list=wrong)


# --------------------------------------------------------------------------- DFDC


def _name(rng: random.Random) -> str:
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(10)) + ".mp4"


@pytest.fixture(scope="module")
def dfdc_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six parts: part 0 is the real metadata excerpt; the others are generated in its format,
    with some fakes whose original lives in another part."""
    root = tmp_path_factory.mktemp("dfdc")
    rng = random.Random(0)
    excerpt = json.loads((REAL_DATA / "dfdc" / "metadata_excerpt.json").read_text())
    parts: dict[int, dict] = {0: dict(excerpt)}
    reals: list[tuple[int, str]] = []
    for k in (1, 2, 3, 5, 8):  # gaps in the numbering are allowed
        meta = {}
        for _ in range(12):
            real = _name(rng)
            meta[real] = {"label": "REAL", "split": "train", "original": None}
            reals.append((k, real))
            for _ in range(rng.randint(1, 4)):
                meta[_name(rng)] = {"label": "FAKE", "split": "train", "original": real}
        parts[k] = meta
    for _ in range(10):  # cross-part fakes
        k, real = rng.choice(reals)
        other = rng.choice([p for p in parts if p != k])
        parts[other][_name(rng)] = {"label": "FAKE", "split": "train", "original": real}
    for k, meta in parts.items():
        folder = root / f"dfdc_train_part_{k}"
        folder.mkdir()
        (folder / "metadata.json").write_text(json.dumps(meta))
        for name in meta:
            touch(folder / name)
    return root


def test_dfdc_groups_never_span_splits(dfdc_root: Path) -> None:
    rows = read_manifest("dfdc", dfdc_root, parts_per_chunk=2, val_fraction=0.2, test_fraction=0.2)
    splits_of_group: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        splits_of_group[r.group].add(r.split)
    assert all(len(s) == 1 for s in splits_of_group.values())
    assert {r.split for r in rows} == {"train", "val", "test"}
    by_name = {Path(r.path).name: r for r in rows}
    meta = json.loads((dfdc_root / "dfdc_train_part_0" / "metadata.json").read_text())
    for name, info in meta.items():
        r = by_name[name]
        assert r.label == (info["label"] == "FAKE")
        assert r.method == ("dfdc-fake" if r.label else "real")
        if info["original"]:
            assert r.group == Path(info["original"]).stem
    # chunks by sorted part index: parts 0,1 -> 0; 2,3 -> 1; 5,8 -> 2
    chunk_of_part = {Path(r.video_id).parts[0]: r.chunk for r in rows}
    assert chunk_of_part == {
        "dfdc_train_part_0": 0,
        "dfdc_train_part_1": 0,
        "dfdc_train_part_2": 1,
        "dfdc_train_part_3": 1,
        "dfdc_train_part_5": 2,
        "dfdc_train_part_8": 2,
    }
    assert read_manifest("dfdc", dfdc_root, parts_per_chunk=2, val_fraction=0.2, test_fraction=0.2) == rows


def test_dfdc_missing_and_unlisted_are_reported(dfdc_root: Path) -> None:
    folder = dfdc_root / "dfdc_train_part_0"
    (folder / "aagfhgtpmv.mp4").unlink()
    (folder / "zzzzzzzzzz.mp4").touch()
    try:
        rows = read_manifest("dfdc", dfdc_root)
        ghost = next(r for r in rows if r.video_id == "dfdc_train_part_0/aagfhgtpmv.mp4")
        assert not ghost.exists and ghost.label == 1
    finally:
        (folder / "aagfhgtpmv.mp4").touch()
        (folder / "zzzzzzzzzz.mp4").unlink()
    assert [(Path(i.path).name, i.reason) for i in rows.issues] == [
        ("zzzzzzzzzz.mp4", "not listed in dfdc_train_part_0/metadata.json")
    ]


# --------------------------------------------------------------------------- shared


def test_manifest_row_contract() -> None:
    assert MANIFEST_FIELDS == ("video_id", "path", "dataset", "label", "method", "group", "split", "chunk", "original")
    row = ManifestRow("a/b.mp4", "/x/a/b.mp4", "ffpp", 1, "Deepfakes", "000", "train")
    assert ManifestRow.from_dict(row.to_dict() | {"extra": 1}) == row


def test_assign_splits_is_stable_and_nonempty() -> None:
    groups = [f"g{i}" for i in range(1000)]
    a = assign_splits(groups, 0.1, 0.1)
    b = assign_splits(groups[:500], 0.1, 0.1)
    assert all(a[g] == b[g] for g in b)  # adding groups does not move existing ones
    counts = {s: sum(v == s for v in a.values()) for s in ("train", "val", "test")}
    assert 50 < counts["val"] < 150 and 50 < counts["test"] < 150
    tiny = assign_splits(["x", "y", "z"], 0.1)
    assert sorted(tiny.values()) == ["train", "train", "val"]


def test_synthetic_truth_sets_family(tmp_path: Path) -> None:
    folder = tmp_path / "dfdc_train_part_0"
    folder.mkdir()
    meta = {
        "aaaaaaaaaa.mp4": {"label": "REAL", "split": "train", "original": None},
        "bbbbbbbbbb.mp4": {"label": "FAKE", "split": "train", "original": "aaaaaaaaaa.mp4"},
    }
    (folder / "metadata.json").write_text(json.dumps(meta))
    truth = {
        "dfdc_train_part_0/aaaaaaaaaa.mp4": {"label": 0, "family": "real", "boxes": []},
        "dfdc_train_part_0/bbbbbbbbbb.mp4": {"label": 1, "family": "temporal_flicker", "boxes": []},
    }
    (tmp_path / "synthetic_truth.json").write_text(json.dumps(truth))
    rows = read_manifest("dfdc", tmp_path)
    assert [(r.label, r.method) for r in rows] == [(0, "real"), (1, "temporal_flicker")]
    assert set(rows[0].to_dict()) == set(MANIFEST_FIELDS)
