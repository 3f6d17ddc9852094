"""Tests of the synthetic benchmark generator on real generated files (tiny scale)."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from data_pipeline import synthetic as syn
from data_pipeline.video import probe, read_audio, read_frames

TINY = syn.config_for_scale("tiny", seed=7)


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("synth") / "bench"
    summary = syn.generate(root, TINY, progress=None)
    return root, summary


def _truth(root: Path, ds: str) -> dict[str, dict[str, Any]]:
    return json.loads((root / ds / "synthetic_truth.json").read_text())


def _two_person(root: Path, label: int) -> list[tuple[str, dict[str, Any]]]:
    """The benchmark's two-person DFDC videos of ``label``, sorted."""
    return [(v, e) for v, e in sorted(_truth(root, "dfdc").items()) if e["persons"] == 2 and e["label"] == label]


def _videos(root: Path, ds: str) -> set[str]:
    return {p.relative_to(root / ds).as_posix() for p in (root / ds).rglob("*.mp4")}


def test_every_dataset_has_every_family(bench: tuple[Path, dict[str, Any]]) -> None:
    root, summary = bench
    for ds in syn.DATASETS:
        truth = _truth(root, ds)
        assert set(truth) == _videos(root, ds), "truth covers exactly the written videos"
        fams = {e["family"] for e in truth.values()}
        assert fams == {"real", *syn.FAMILIES}
        assert summary["datasets"][ds]["videos"] == len(truth)
        for entry in truth.values():
            assert entry["label"] == (0 if entry["family"] == "real" else 1)
        # low light is not the fake signal: low-light reals and low-light fakes both exist
        low = [e["label"] for e in truth.values() if e["light"] == "low"]
        assert 0 in low and 1 in low


def test_ffpp_layout_and_official_splits(bench: tuple[Path, dict[str, Any]]) -> None:
    root, _ = bench
    ff = root / "ffpp"
    splits = {s: json.loads((ff / "splits" / f"{s}.json").read_text()) for s in ("train", "val", "test")}
    seen: list[str] = []
    for pairs in splits.values():
        assert pairs, "every split has at least one pair"
        for pair in pairs:
            assert isinstance(pair, list) and len(pair) == 2
            assert all(isinstance(i, str) and re.fullmatch(r"\d{3}", i) for i in pair)
            seen += pair
    assert len(seen) == len(set(seen)), "splits are disjoint"
    truth = _truth(root, "ffpp")
    originals = {Path(v).stem for v in truth if v.startswith("original_sequences/youtube/c23/videos/")}
    assert originals == set(seen)
    pair_of = {a: b for pairs in splits.values() for a, b in pairs} | {b: a for pairs in splits.values() for a, b in pairs}
    folders = set(syn.FAMILY_FOLDERS.values())
    for vid, entry in truth.items():
        if entry["label"] == 1:
            m = re.fullmatch(r"manipulated_sequences/(\w+)/c23/videos/(\d{3})_(\d{3})\.mp4", vid)
            assert m and m.group(1) in folders
            assert syn.FAMILY_FOLDERS[entry["family"]] == m.group(1)
            target, source = m.group(2), m.group(3)
            assert pair_of[target] == source, "fake a_b is made within the pair [a, b]"
            assert entry["group"] == target == truth[f"original_sequences/youtube/c23/videos/{target}.mp4"]["group"]


def test_celebdf_layout_and_test_list(bench: tuple[Path, dict[str, Any]]) -> None:
    root, _ = bench
    cd = root / "celebdf"
    raw = (cd / "List_of_testing_videos.txt").read_text()
    assert not raw.endswith("\n"), "like the official list: no trailing newline"
    lines = raw.split("\n")
    labels = set()
    for line in lines:
        label, rel = line.split(" ")
        assert (cd / rel).is_file()
        sub = rel.split("/")[0]
        assert sub in {"Celeb-real", "YouTube-real", "Celeb-synthesis"}
        assert label == ("0" if sub == "Celeb-synthesis" else "1"), "Celeb-DF: 1 = REAL, 0 = FAKE"
        labels.add(label)
    assert labels == {"0", "1"}
    truth = _truth(root, "celebdf")
    for vid, entry in truth.items():
        sub, name = vid.split("/")
        if sub == "Celeb-real":
            assert re.fullmatch(r"id\d+_\d{4}\.mp4", name) and entry["label"] == 0
        elif sub == "YouTube-real":
            assert re.fullmatch(r"\d{5}\.mp4", name) and entry["label"] == 0
        else:
            m = re.fullmatch(r"(id\d+)_(id\d+)_(\d{4})\.mp4", name)
            assert sub == "Celeb-synthesis" and m and entry["label"] == 1
            assert m.group(1) != m.group(2)
            target = f"Celeb-real/{m.group(1)}_{m.group(3)}.mp4"
            assert truth[target]["group"] == entry["group"] == m.group(1)


def test_dfdc_parts_and_metadata(bench: tuple[Path, dict[str, Any]]) -> None:
    root, _ = bench
    parts = sorted((root / "dfdc").glob("dfdc_train_part_*"))
    assert [p.name for p in parts] == [f"dfdc_train_part_{k}" for k in range(TINY.dfdc_parts)]
    truth = _truth(root, "dfdc")
    for part in parts:
        meta = json.loads((part / "metadata.json").read_text())
        assert set(meta) == {p.name for p in part.glob("*.mp4")}
        for name, entry in meta.items():
            assert re.fullmatch(r"[a-z]{10}\.mp4", name)
            assert set(entry) == {"label", "split", "original"} and entry["split"] == "train"
            if entry["label"] == "REAL":
                assert entry["original"] is None
            else:
                assert entry["label"] == "FAKE"
                assert meta[entry["original"]]["label"] == "REAL", "a fake lives in its original's part"
                assert truth[f"{part.name}/{name}"]["group"] == entry["original"]


def test_truth_boxes_inside_frames(bench: tuple[Path, dict[str, Any]]) -> None:
    root, _ = bench
    for ds in syn.DATASETS:
        truth = _truth(root, ds)
        for vid in {sorted(truth)[0], max(truth, key=lambda v: truth[v].get("persons", 1))}:
            info = probe(root / ds / vid)
            width = TINY.width * truth[vid].get("persons", 1)  # two-person DFDC videos are twice as wide
            assert (info.width, info.height, info.num_frames) == (width, TINY.height, TINY.num_frames)
            assert info.has_audio
        for entry in truth.values():
            faces = [np.array(f["boxes"]) for f in entry.get("faces", [])] or [np.array(entry["boxes"])]
            for boxes in faces + [np.array(entry["boxes"])]:
                assert boxes.shape == (TINY.num_frames, 4)
                assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
                assert (boxes[:, 2] <= TINY.width * entry.get("persons", 1)).all() and (boxes[:, 3] <= TINY.height).all()
                side = boxes[:, 3] - boxes[:, 1]
                assert ((side > 0.3 * TINY.height) & (side < 0.75 * TINY.height)).all()


def test_deterministic_by_seed(bench: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    root, _ = bench
    again = tmp_path / "again"
    assert syn.main(["--out", str(again), "--scale", "tiny", "--seed", str(TINY.seed), "--quiet"]) == 0
    for ds in syn.DATASETS:
        meta = sorted(p.relative_to(root / ds) for p in (root / ds).rglob("*") if p.suffix in {".json", ".txt"})
        assert meta == sorted(p.relative_to(again / ds) for p in (again / ds).rglob("*") if p.suffix in {".json", ".txt"})
        for rel in meta:
            assert (root / ds / rel).read_bytes() == (again / ds / rel).read_bytes(), rel
    truth = _truth(root, "ffpp")
    fake = next(v for v, e in sorted(truth.items()) if e["family"] == "face_swap")
    np.testing.assert_array_equal(read_frames(root / "ffpp" / fake), read_frames(again / "ffpp" / fake))
    for vid, _ in (_two_person(root, 0)[0], _two_person(root, 1)[0]):  # two-person real and fake
        np.testing.assert_array_equal(read_frames(root / "dfdc" / vid), read_frames(again / "dfdc" / vid))
    other = tmp_path / "other"
    syn.generate(other, syn.config_for_scale("tiny", seed=TINY.seed + 1, datasets=("dfdc",)), progress=None)
    assert _videos(other, "dfdc") != _videos(root, "dfdc")


def _frame_loudness(audio: np.ndarray, n_frames: int, fps: float, sr: int) -> np.ndarray:
    per = sr / fps
    return np.array([np.sqrt(np.mean(audio[int(i * per) : int((i + 1) * per)] ** 2)) for i in range(n_frames)])


def test_audio_loudness_follows_mouth(tmp_path: Path) -> None:
    cfg = TINY
    corr_real, corr_shift = [], []
    for seed in range(3):
        path = tmp_path / f"real{seed}.mp4"
        rendered = syn.write_sample(path, seed, cfg)
        audio = read_audio(path, cfg.sample_rate)
        assert audio is not None
        loud = _frame_loudness(audio, cfg.num_frames, cfg.fps, cfg.sample_rate)
        corr_real.append(np.corrcoef(loud, rendered.mouth)[0, 1])
        shifted = tmp_path / f"shift{seed}.mp4"
        syn.write_sample(shifted, seed, cfg, family="lip_sync_shift")
        audio = read_audio(shifted, cfg.sample_rate)
        assert audio is not None
        loud = _frame_loudness(audio, cfg.num_frames, cfg.fps, cfg.sample_rate)
        corr_shift.append(np.corrcoef(loud, rendered.mouth)[0, 1])
    assert min(corr_real) > 0.6, corr_real
    assert max(corr_shift) < min(corr_real) - 0.4, (corr_real, corr_shift)


def test_background_only_and_silent_samples(tmp_path: Path) -> None:
    empty = tmp_path / "noface.mp4"
    rendered = syn.write_sample(empty, 0, TINY, face=False)
    assert np.isnan(rendered.boxes).all()
    frames = read_frames(empty)
    assert frames.shape == (TINY.num_frames, TINY.height, TINY.width, 3)
    silent = tmp_path / "silent.mp4"
    syn.write_sample(silent, 0, TINY, audio=False)
    assert not probe(silent).has_audio and probe(empty).has_audio


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_haar_cascade_finds_rendered_faces() -> None:
    """Single-frame OpenCV Haar detection (no tracking) on tiny real renders."""
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    assert not cascade.empty()
    hits = total = 0
    for seed in range(24):
        frames, _, boxes = syn.render_real(seed, TINY)
        for i in (0, len(frames) // 2, len(frames) - 1):
            gray = cv2.cvtColor(frames[i], cv2.COLOR_RGB2GRAY)
            found = cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=3, minSize=(24, 24))
            best = max((_iou(np.array([x, y, x + w, y + h], float), boxes[i]) for x, y, w, h in found), default=0.0)
            hits += best >= 0.5
            total += 1
    assert hits / total >= 0.8, f"Haar single-frame hit rate {hits}/{total}"


def test_each_family_manipulates_only_its_signal() -> None:
    """Face families change the face and leave the background; lip sync changes only audio;
    every family maps to a specialist."""
    assert set(syn.FAMILY_SPECIALIST) == set(syn.FAMILIES) == set(syn.FAMILY_FOLDERS)
    rng = syn._rng(3, "families")
    ident, scene, source = syn.make_identity(rng), syn.make_scene(rng, TINY), syn.make_identity(rng)
    ll = syn.make_low_light(rng)
    for family in syn.FAMILIES:
        real = syn.capture(ident, scene, ll if family == "low_light" else None)
        frames, audio = syn.apply_family(family, real, ident, scene, syn._rng(4, family), source=source,
                                         low_light=ll if family == "low_light" else None)
        assert frames.shape == real.frames.shape and frames.dtype == np.uint8
        diff = np.abs(frames.astype(np.int16) - real.frames.astype(np.int16)).max(axis=-1)
        inside = np.zeros(diff.shape, bool)
        # double compression's region starts on the frame's 16-px codec grid, below the box's margin
        start = (lambda v: max(0, (v - 10) // 16 * 16)) if family == "double_compression" else (lambda v: max(0, v - 8))
        for i, (x0, y0, x1, y1) in enumerate(real.boxes.astype(int)):
            inside[i, start(y0) : y1 + 8, start(x0) : x1 + 8] = True
        if family == "lip_sync_shift":
            assert (diff == 0).all() and not np.array_equal(audio, real.audio)
            continue
        assert np.array_equal(audio, real.audio)
        assert diff[inside].mean() > 2.0, family
        assert diff[~inside].mean() < 0.5, family


# ------------------------------------------------------------------ DFDC two-person videos


def test_dfdc_truth_lists_faces(bench: tuple[Path, dict[str, Any]]) -> None:
    """DFDC truth entries list one face per person (boxes to 0.1 px); a two-person fake has exactly
    one fake face, both faces occur as the fake one; FF++ and Celeb-DF entries are unchanged."""
    root, _ = bench
    for ds in ("ffpp", "celebdf"):
        assert all(set(e) == {"label", "family", "boxes", "group", "light"} for e in _truth(root, ds).values())
    truth = _truth(root, "dfdc")
    fake_faces = []
    for vid, entry in truth.items():
        faces = entry["faces"]
        assert len(faces) == entry["persons"] in (1, 2)
        assert probe(root / "dfdc" / vid).width == TINY.width * entry["persons"]
        fakes = [k for k, f in enumerate(faces) if f["fake"]]
        assert len(fakes) == entry["label"], vid  # reals: none; fakes: exactly one
        for face in faces:
            assert all(round(v, 1) == v for box in face["boxes"] for v in box)
        if entry["persons"] == 2 and fakes:
            fake_faces.append(fakes[0])
            np.testing.assert_allclose(entry["boxes"], faces[fakes[0]]["boxes"], atol=0.051)
        elif entry["persons"] == 1:
            np.testing.assert_allclose(entry["boxes"], faces[0]["boxes"], atol=0.051)
    assert sorted(set(fake_faces)) == [0, 1], "either face can be the fake one"
    left, right = (np.array(f["boxes"]) for f in _two_person(root, 0)[0][1]["faces"])
    assert (left[:, 2] < right[:, 0]).all(), "person 0 left of person 1, faces apart"


def _box_masks(shape: tuple[int, ...], boxes: list[list[float]], grow: float = 0.0, grid: int = 1) -> np.ndarray:
    """(N, H, W) bool: inside each frame's box, grown by ``grow`` x its side on every side, its top-left
    corner moved down to a multiple of ``grid`` (double compression works on the 16-px codec grid)."""
    m = np.zeros(shape, bool)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        g = grow * (x1 - x0)
        top, left = max(0, int(y0 - g)) // grid * grid, max(0, int(x0 - g)) // grid * grid
        m[i, top : int(np.ceil(y1 + g)), left : int(np.ceil(x1 + g))] = True
    return m


def test_two_person_fake_changes_only_its_face(bench: tuple[Path, dict[str, Any]]) -> None:
    """Decoded: a two-person fake differs from its original clearly inside the fake face's box and
    only by codec noise inside the other face's box and away from both faces."""
    root, _ = bench
    fakes = _two_person(root, 1)
    assert fakes
    for vid, entry in fakes:
        original = f"{vid.split('/')[0]}/{entry['group']}"
        diff = np.abs(read_frames(root / "dfdc" / vid).astype(np.int16)
                      - read_frames(root / "dfdc" / original).astype(np.int16)).mean(axis=-1)
        faces = entry["faces"]
        mad = [float(diff[_box_masks(diff.shape, f["boxes"])].mean()) for f in faces]
        far = ~(_box_masks(diff.shape, faces[0]["boxes"], 0.25) | _box_masks(diff.shape, faces[1]["boxes"], 0.25))
        fake, other = (0, 1) if faces[0]["fake"] else (1, 0)
        if entry["family"] == "lip_sync_shift":  # the fake person's voice is shifted, the frames are not
            assert max(mad) < 4.0 and not np.allclose(read_audio(root / "dfdc" / vid), read_audio(root / "dfdc" / original))
            continue
        assert mad[fake] > 5.0 and mad[fake] > 3 * mad[other], (vid, entry["family"], mad)
        assert mad[other] < 4.0 and diff[far].mean() < 3.0, (vid, entry["family"], mad)


def test_pair_families_touch_only_one_face() -> None:
    """Before encoding, every family's two-person fake equals the real outside the manipulated
    face's region (its box, grown by a quarter) and changes that face; lip sync shifts only that
    person's voice."""
    cfg = replace(TINY, num_frames=8)
    rng = syn._rng(5, "pair")
    idents = (syn.make_identity(rng), syn.make_identity(rng))
    scenes, source, ll = syn.make_pair_scenes(rng, cfg), syn.make_identity(rng), syn.make_low_light(rng)
    for k, family in enumerate(syn.FAMILIES):
        face = k % 2
        low = ll if family == "low_light" else None
        views = syn.capture_pair(idents, scenes, low)
        assert views[0].frames.shape == (8, cfg.height, 2 * cfg.width, 3)
        frames, audio = syn.pair_fake(family, views, idents, scenes, face, syn._rng(6, family), source=source, low_light=low)
        diff = np.abs(frames.astype(np.int16) - views[0].frames.astype(np.int16)).max(axis=-1)
        region = _box_masks(diff.shape, views[face].boxes.tolist(), 0.25, 16 if family == "double_compression" else 1)
        assert (diff[~region] == 0).all(), family
        real_audio = syn.mix_voices([v.audio for v in views])
        if family == "lip_sync_shift":
            assert (diff == 0).all()
            voices = [v.audio for v in views]
            _, voices[face] = syn.apply_family(family, views[face], idents[face], scenes[face], syn._rng(6, family))
            assert not np.array_equal(voices[face], views[face].audio)
            np.testing.assert_array_equal(audio, syn.mix_voices(voices))  # the other voice is intact
            assert not np.allclose(audio, real_audio)
            continue
        assert diff[region].mean() > 2.0, family
        np.testing.assert_array_equal(audio, real_audio)


@pytest.mark.parametrize("name", ["haar", "mtcnn"])
def test_detectors_find_both_faces(bench: tuple[Path, dict[str, Any]], name: str) -> None:
    """The faces of the two-person videos (decoded) are found, IoU >= 0.5 with the truth boxes, in
    >= 95% of sampled frames: both faces of reals and fakes for Haar. MTCNN misses some
    manipulated faces (colour-cast face swaps, in one-person fakes too), so it is held to both
    faces of the reals and the intact face of the fakes."""
    from data_pipeline.faces import create_detector

    if name == "mtcnn":
        pytest.importorskip("facenet_pytorch")
    root, _ = bench
    detector = create_detector(name)
    for label in (0, 1):
        hits = total = 0
        for vid, entry in _two_person(root, label):
            frames = read_frames(root / "dfdc" / vid)
            faces = [f for f in entry["faces"] if name == "haar" or not f["fake"]]
            for i in range(0, len(frames), 2 + label):
                found = [np.array([b.x0, b.y0, b.x1, b.y1]) for b in detector.detect(frames[i])]
                hits += all(max((_iou(f, np.array(face["boxes"][i])) for f in found), default=0.0) >= 0.5
                            for face in faces)
                total += 1
        assert total >= 20 and hits / total >= 0.95, f"{name}: faces found in {hits}/{total} frames (label {label})"


def test_other_layouts_do_not_depend_on_two_person_fraction(tmp_path: Path) -> None:
    """FF++ and Celeb-DF plans and files (and DFDC's names and metadata) are the same whatever
    ``dfdc_two_person_fraction`` is."""
    from data_pipeline.synthetic.generation import _run_task
    from data_pipeline.synthetic.layouts import _PLANNERS

    cfgs = [replace(TINY, num_frames=4, dfdc_two_person_fraction=f) for f in (0.0, 1.0)]
    for ds in syn.DATASETS:
        (tasks_a, meta_a), (tasks_b, meta_b) = (_PLANNERS[ds](c, tmp_path / str(i) / ds) for i, c in enumerate(cfgs))
        assert meta_a == meta_b
        assert [t.persons for t in tasks_a] == [1] * len(tasks_a)
        assert [t.persons for t in tasks_b] == [2 if ds == "dfdc" else 1] * len(tasks_b)
        if ds == "dfdc":
            assert [(t.real, t.fakes) for t in tasks_a] == [(t.real, t.fakes) for t in tasks_b]
            continue
        assert [replace(t, root="") for t in tasks_a] == [replace(t, root="") for t in tasks_b]
        truths = [_run_task((tasks[0], c)) for tasks, c in ((tasks_a, cfgs[0]), (tasks_b, cfgs[1]))]
        assert truths[0] == truths[1]
        for rel in truths[0]:
            assert (tmp_path / "0" / ds / rel).read_bytes() == (tmp_path / "1" / ds / rel).read_bytes()
