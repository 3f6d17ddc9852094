"""``interceptor predict``: real H.264 videos, corrupt files and faceless videos all give JSON;
one decode serves every specialist; checkpoints that disagree on format are refused by name."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from data_pipeline import synthetic
from ray_jobs.checkpoints import CheckpointError, build_payload, model_from_checkpoint, save_checkpoint
from ray_jobs.config import StageChain
from ray_jobs.interceptor import Interceptor
from ray_jobs.layout import COMPLETE_FILE, ensemble_parts, final_parts
from ray_jobs.members import check_members, discover_members, load_ensemble, members_of, read_member
from ray_jobs.predict import main
from ray_jobs.runner import SpecialistRunner
from ray_jobs.storage import Storage
from specialists import create_model
from specialists.ensemble import fit_ensemble
from specialists.model import model_inputs
from tests.helpers import TINY, batches, learnable_clips

NAME = "exp"


def write_member(storage: Storage, key: str, stage: str, *, train=None, epochs: int = 1, seed: int = 0,
                 name: str = NAME, **model_overrides) -> None:
    """Train a tiny specialist in-process (``train``: a learnable-clips dict, or none) and export it
    in the train job's final-checkpoint layout, COMPLETE.json included."""
    recipe = StageChain.load().get(stage).replace(lr=3e-3, epochs=epochs)
    torch.manual_seed(seed)
    model = create_model(key, **{**TINY, **model_overrides})
    runner = SpecialistRunner(model, recipe, seed=seed, log_every=0, class_counts={0: 1, 1: 1})
    metrics = {}
    if train is not None:
        metrics = runner.fit(lambda e: batches(train, 16, seed=seed * 100 + e), lambda: batches(train, 64))
    parts = final_parts(name, key, recipe.name)
    save_checkpoint(storage.path(*parts), build_payload(runner.state_dict(), model.config, recipe, metrics))
    storage.write_json({"specialist": key, "stage": recipe.name, "val_auc": metrics.get("val_auc")}, *parts, COMPLETE_FILE)
    runner.close()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three tiny specialists whose stages use three different filters, and their fitted ensemble."""
    storage = Storage(str(tmp_path_factory.mktemp("runs")))
    train = learnable_clips(64, seed=1)
    write_member(storage, "cm", "ffpp", train=train)           # resize
    write_member(storage, "tm", "celebdf", train=train)        # clahe
    write_member(storage, "av", "dfdc", train=train, seed=1)   # clahe_bilateral, hears audio
    members = discover_members(storage, NAME, StageChain.load())
    check_members(members)
    # fit on the models' own scores of held-out learnable clips (what evaluate does with shards)
    held = learnable_clips(64, seed=2)
    probs = {}
    with torch.no_grad():
        for m in members:
            model = model_from_checkpoint(storage.path(*m.parts)).eval()
            probs[m.specialist] = torch.softmax(model(**model_inputs(held)), 1)[:, 1].numpy()
    ens = fit_ensemble(probs, held["label"].numpy(),
                       extra={"checkpoints": {m.specialist: m.record() for m in members},
                              "clips": {"clips_per_video": 4, "margin": 0.3, "detector": "haar"}})
    storage.write_json(ens.to_dict(), *ensemble_parts(NAME))
    return storage


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    cfg = synthetic.config_for_scale("tiny")
    synthetic.write_sample(folder / "real.mp4", 1, cfg)
    synthetic.write_sample(folder / "fake.mp4", 2, cfg, family="face_swap")
    synthetic.write_sample(folder / "noface.mp4", 3, cfg, face=False)
    good = (folder / "real.mp4").read_bytes()
    (folder / "corrupt.mp4").write_bytes(good[: len(good) // 3])  # truncated H.264 file
    (folder / "garbage.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    return folder


def _run(capsys, argv):
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def test_predict_gives_json_for_real_corrupt_and_faceless_videos(runs, videos, capsys, tmp_path):
    paths = [str(videos / n) for n in ("real.mp4", "corrupt.mp4", "noface.mp4", "garbage.mp4")]
    rc, out, err = _run(capsys, [*paths, "--storage-path", runs.uri, "--name", NAME, "--out", str(tmp_path / "r.json")])
    assert rc == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [Path(r["path"]).name for r in rows] == ["real.mp4", "corrupt.mp4", "noface.mp4", "garbage.mp4"]
    real, corrupt, noface, garbage = rows
    assert real["face_found"] and real["clips"] > 0 and real["reason"] is None
    assert 0 < real["prob_fake"] < 1 and real["verdict"] in {"real", "fake"}
    assert set(real["specialists"]) == {"cm", "tm", "av"}
    for r in (corrupt, noface, garbage):
        assert r["prob_fake"] == 0.5 and r["verdict"] == "unscored" and r["clips"] == 0 and not r["face_found"]
        assert r["reason"]
    assert noface["reason"] == "no face"
    assert json.loads((tmp_path / "r.json").read_text()) == rows
    assert "[predict] 4/4" in err


def test_predict_scores_a_folder(runs, videos, capsys):
    rc, out, err = _run(capsys, [str(videos), "--storage-path", runs.uri, "--name", NAME, "--quiet"])
    assert rc == 0, err
    names = sorted(Path(json.loads(line)["path"]).name for line in out.splitlines())
    assert names == ["corrupt.mp4", "fake.mp4", "garbage.mp4", "noface.mp4", "real.mp4"]


def test_one_decode_serves_every_filter_exactly(runs, videos):
    """Scoring all specialists from one resize decode equals decoding once per specialist with
    its own stage filter (the shards' way), clip for clip."""
    icp = Interceptor.load(runs, NAME)
    assert {k: v.value for k, v in icp.preprocessing.items()} == {"cm": "resize", "tm": "clahe", "av": "clahe_bilateral"}
    rows = icp.extract(videos / "fake.mp4")
    shared = icp.clip_probs(rows)
    for key, kind in icp.preprocessing.items():
        own = icp.clip_probs(icp.extract(videos / "fake.mp4", kind), [key])[key]
        np.testing.assert_allclose(shared[key], own, rtol=1e-5, atol=1e-6)


def test_bad_input_is_one_line_and_exit_2(runs, tmp_path, capsys):
    rc, out, err = _run(capsys, [str(tmp_path / "nope.mp4"), "--storage-path", runs.uri, "--name", NAME])
    assert rc == 2 and err.strip().startswith("interceptor predict: error: no such file") and len(err.strip().splitlines()) == 1
    video = tmp_path / "v.mp4"
    video.write_bytes(b"x")
    rc, out, err = _run(capsys, [str(video), "--storage-path", runs.uri, "--name", "never-fitted"])
    assert rc == 2 and "no fitted ensemble" in err and "interceptor evaluate" in err
    (tmp_path / "empty").mkdir()
    rc, out, err = _run(capsys, [str(tmp_path / "empty"), "--storage-path", runs.uri, "--name", NAME])
    assert rc == 2 and "no video files" in err


def test_checkpoints_that_disagree_on_format_are_refused_by_name(tmp_path, capsys):
    storage = Storage(str(tmp_path / "runs"))
    write_member(storage, "cm", "ffpp")
    write_member(storage, "rr", "ffpp", image_size=48)
    members = discover_members(storage, NAME, StageChain.load())
    with pytest.raises(CheckpointError) as e:
        check_members(members)
    msg = str(e.value)
    assert storage.display(*final_parts(NAME, "rr", "ffpp")) in msg and "image_size is 48" in msg

    write_member(storage, "rr", "ffpp", num_frames=8)
    with pytest.raises(CheckpointError, match="num_frames is 8"):
        check_members(discover_members(storage, NAME, StageChain.load()))

    # a checkpoint of another format version is refused naming it
    parts = final_parts(NAME, "rr", "ffpp")
    meta = storage.read_json(*parts, "meta.json")
    storage.write_json({**meta, "format_version": 99}, *parts, "meta.json")
    with pytest.raises(CheckpointError) as e:
        read_member(storage, "rr", "ffpp", parts)
    assert storage.display(*parts) in str(e.value) and "format version 99" in str(e.value)


def test_a_retrained_checkpoint_needs_a_refit(runs, tmp_path):
    import shutil

    copy = Storage(str(tmp_path / "runs"))
    shutil.copytree(runs.uri, copy.uri)
    ens_members = members_of(load_ensemble(copy, NAME), copy)
    assert {m.specialist for m in ens_members} == {"cm", "tm", "av"}
    write_member(copy, "cm", "ffpp", seed=5)  # the same place, a new checkpoint
    with pytest.raises(CheckpointError, match="changed since the ensemble was fitted"):
        Interceptor.load(copy, NAME)


def test_predict_scores_every_face_and_takes_the_maximum(runs, tiny_benchmark, capsys):
    """A two-person DFDC fake of the synthetic benchmark: one entry per face, and the video's
    probability (and verdict) is its most suspicious face's."""
    truth = json.loads((tiny_benchmark / "dfdc" / "synthetic_truth.json").read_text())
    vid = next(k for k, v in sorted(truth.items()) if v.get("persons") == 2 and v["label"] == 1)
    rc, out, err = _run(capsys, [str(tiny_benchmark / "dfdc" / vid), "--storage-path", runs.uri, "--name", NAME, "--quiet"])
    assert rc == 0, err
    result = json.loads(out.splitlines()[-1])
    faces = result["faces"]
    assert [f["face_index"] for f in faces] == [0, 1] and all(f["clips"] == 4 for f in faces)
    assert result["clips"] == 8 and result["prob_fake"] == max(f["prob_fake"] for f in faces)
    top = max(faces, key=lambda f: f["prob_fake"])
    assert result["specialists"] == top["specialists"] and set(top["specialists"]) == {"cm", "tm", "av"}
    left, right = sorted(faces, key=lambda f: f["box"][0])
    assert left["box"][2] <= right["box"][0] + 0.5 * (right["box"][2] - right["box"][0])  # two different people
