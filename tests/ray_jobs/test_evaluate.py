"""``interceptor evaluate``: fit on val, evaluate on test with Ray Data; the ensemble beats every
specialist, calibration lowers log loss, the report holds the specialist x family matrix.

Specialists that see different things make the combination meaningful: ``cm`` learns only the
``checker`` family (a high-frequency pattern on the face), ``bg`` only the ``bright`` family
(a brightened face region), ``rr`` both but for one epoch. Val and test hold reals and both
families, two clips per video.
"""

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from data_pipeline.filters import apply_filter
from data_pipeline.shards import make_row, shard_name, write_shard
from ray_jobs.evaluate import main
from ray_jobs.evaluation import EvaluateConfig
from ray_jobs.layout import final_parts
from ray_jobs.members import load_ensemble
from ray_jobs.scoring import ClipScorer
from ray_jobs.storage import Storage
from tests.ray_jobs.test_predict import write_member

NAME = "exp"
SIZE, FRAMES = 32, 4
FAMILIES = ("checker", "bright")


def family_clips(families: list[str], seed: int) -> dict[str, torch.Tensor]:
    """One clip per entry: reals are a flat colour with noise; ``checker`` fakes carry a
    high-frequency checkerboard on the central "face", ``bright`` fakes a brightened one."""
    n = len(families)
    g = torch.Generator().manual_seed(seed)
    base = 0.3 + 0.4 * torch.rand(n, 1, 3, 1, 1, generator=g)
    x = base + 0.06 * torch.randn(n, FRAMES, 3, SIZE, SIZE, generator=g)
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    checker = (((yy // 2 + xx // 2) % 2).float() - 0.5) * 0.3
    lo, hi = SIZE // 4, 3 * SIZE // 4
    for i, fam in enumerate(families):
        if fam == "checker":
            x[i, :, :, lo:hi, lo:hi] += checker[lo:hi, lo:hi]
        elif fam == "bright":
            x[i, :, :, lo:hi, lo:hi] += 0.25
    label = torch.tensor([int(f != "real") for f in families])
    x = x.clamp(0, 1)
    return {"frames": x, "audio": torch.zeros(n, 40, 16), "has_audio": torch.zeros(n, dtype=torch.bool),
            "grid": x[:, FRAMES // 2].clone(), "label": label}


def mix(n: int, fakes) -> list[str]:
    """``n`` entries: every other one real, fakes cycling over ``fakes``."""
    return ["real" if i % 2 == 0 else fakes[(i // 2) % len(fakes)] for i in range(n)]


def write_split(folder, split: str, n_videos: int, seed: int, clips: int = 2, preprocessing: str = "resize",
                dataset: str = "ffpp"):
    families = mix(n_videos, FAMILIES)
    data = family_clips([f for f in families for _ in range(clips)], seed)
    frames = (data["frames"].permute(0, 1, 3, 4, 2).numpy() * 255).round().astype(np.uint8)
    rows, ids = [], []
    for v, fam in enumerate(families):
        vid = f"{split}/{v:03d}.mp4"
        manifest = {"video_id": vid, "path": f"/synthetic/{vid}", "dataset": dataset, "label": int(fam != "real"),
                    "method": fam, "group": f"{split}{v}", "split": split, "chunk": 0}
        for c in range(clips):
            clip = frames[v * clips + c]
            grid = clip[len(clip) // 2]  # the codec-grid patch is cut before the stage filter
            if preprocessing != "resize":
                clip = apply_filter(clip, preprocessing)
            rows.append(make_row(manifest, c, clip, None, [0, 0, SIZE, SIZE], preprocessing, grid=grid))
        ids.append(vid)
    return write_shard(folder / shard_name(dataset, split, ids), rows)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("eval")
    storage = Storage(str(root / "runs"))
    write_member(storage, "cm", "ffpp", train=family_clips(mix(96, ["checker"]), 1), epochs=3)
    write_member(storage, "bg", "ffpp", train=family_clips(mix(96, ["bright"]), 2), epochs=3)
    write_member(storage, "rr", "ffpp", train=family_clips(mix(96, FAMILIES), 3), epochs=1)
    shards = root / "shards"
    write_split(shards, "val", 40, seed=10)
    write_split(shards, "test", 48, seed=11)
    return storage, shards, root


@pytest.fixture(scope="module")
def ray_local():
    yield
    import ray

    ray.shutdown()


@pytest.mark.ray
def test_fit_on_val_then_evaluate_on_test(trained, ray_local, capsys):
    storage, shards, root = trained
    out = root / "report"
    rc = main(["--storage-path", storage.uri, "--name", NAME, "--shards", str(shards), "--out", str(out),
               "--set", "ray_num_cpus=2"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "[evaluate] scored" in captured.err and "clips (100%" in captured.err  # progress
    m = json.loads((out / "metrics.json").read_text())
    assert m["videos"] == 48 and m["clips"] == 96 and m["split"] == "test"

    singles = {k: m["models"][k]["video_auc"] for k in ("cm", "bg", "rr")}
    ens = m["ensemble"]
    assert ens["video_auc"] >= max(singles.values()) - 1e-3, (ens, singles)
    assert ens["log_loss"] < ens["log_loss_uncalibrated"], ens
    assert 0 <= ens["eer"] <= 0.5 and 0 <= ens["frame_auc"] <= 1 and {"acc_real", "acc_fake"} <= set(ens)

    # the specialists really differ: each sees its own family
    fam = m["family_auc"]
    assert m["families"] == ["bright", "checker"]
    assert fam["cm"]["checker"] > 0.9 and fam["bg"]["bright"] > 0.9
    assert fam["cm"]["bright"] < 0.8 and fam["bg"]["checker"] < 0.8
    assert set(fam) >= {"ensemble", "cm", "bg", "rr"}

    report = (out / "report.md").read_text()
    assert "| model | bright | checker |" in report and "| ensemble |" in report
    # these checkpoints record no training families (as older ones): nothing is marked, and a note says so
    assert m["unseen_families"] == [] and "do not record the families they trained on" in report
    assert set(m["dataset_family_auc"]["ffpp"]["auc"]["ensemble"]) == {"bright", "checker"}
    for png in ("roc.png", "reliability.png", "family_auc.png"):
        assert (out / png).stat().st_size > 5000

    saved = load_ensemble(storage, NAME)
    assert sorted(saved.specialists) == ["bg", "cm", "rr"] and saved.extra["fitted_on"] == "val"
    assert saved.extra["checkpoints"]["cm"]["checkpoint"] == storage.display(*final_parts(NAME, "cm", "ffpp"))
    assert (root / "runs" / NAME / "ensemble" / "ensemble.json").is_file()
    assert saved.fit.videos == 40 and saved.fit.log_loss_calibrated <= saved.fit.log_loss_uncalibrated + 1e-3

    # reuse the saved ensemble (no refit) on the val splits of two datasets pooled; the same video
    # ids in both datasets stay apart. The checkpoints now record bright as held out (the marks read
    # only meta.json, which the ensemble's check of epoch and creation time leaves alone)
    for key in ("cm", "bg", "rr"):
        meta = Path(storage.path(*final_parts(NAME, key, "ffpp"))) / "meta.json"
        meta.write_text(json.dumps(json.loads(meta.read_text()) | {"extra": {"hold_out": ["bright"]}}))
    other = root / "shards-celebdf"
    write_split(other, "val", 40, seed=12, preprocessing="clahe", dataset="celebdf")
    rc = main(["--storage-path", storage.uri, "--name", NAME, "--out", str(root / "val"), "--no-fit", "--split", "val",
               "--datasets", "ffpp", "celebdf", "--set", f"shards.ffpp={shards}", "--set", f"shards.celebdf={other}"])
    assert rc == 0
    pooled = json.loads((root / "val" / "metrics.json").read_text())
    assert pooled["videos"] == 80 and pooled["datasets"] == ["celebdf", "ffpp"]
    assert set(pooled["dataset_auc"]["ensemble"]) == {"celebdf", "ffpp"}
    assert pooled["unseen_families"] == ["bright"] and pooled["family_unseen"] == {"bright": True, "checker": False}
    assert set(pooled["dataset_family_auc"]) == {"celebdf", "ffpp"}
    report = (root / "val" / "report.md").read_text()
    assert "| celebdf | bright* | " in report and "| ffpp | checker | " in report and "| model | bright* | checker |" in report
    assert "absent from training: bright (ensemble video AUC" in capsys.readouterr().out


def test_bad_inputs_are_one_line_errors(tmp_path, capsys):
    storage = Storage(str(tmp_path / "runs"))
    rc = main(["--storage-path", storage.uri, "--name", NAME, "--shards", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("interceptor evaluate: error: no complete specialist checkpoint")

    write_member(storage, "cm", "ffpp")
    write_member(storage, "tm", "ffpp", num_frames=8)
    rc = main(["--storage-path", storage.uri, "--name", NAME, "--shards", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert storage.display(*final_parts(NAME, "tm", "ffpp")) in err and "num_frames is 8" in err

    rc = main(["--storage-path", storage.uri, "--name", NAME, "--specialists", "cm", "--shards", str(tmp_path)])
    assert rc == 2 and "no complete val shards" in capsys.readouterr().err
    rc = main(["--storage-path", storage.uri, "--name", NAME, "--no-fit"])
    assert rc == 2 and "no fitted ensemble" in capsys.readouterr().err
    with pytest.raises(Exception, match="never test"):
        EvaluateConfig(fit_split="test")


def test_each_checkpoint_scores_its_own_filter_from_resize_shards(tmp_path):
    """A CLAHE-stage checkpoint scoring resize shards (filter derived on the fly) gives the same
    probabilities as scoring shards prepared with CLAHE."""
    storage = Storage(str(tmp_path / "runs"))
    write_member(storage, "cm", "ffpp")
    write_member(storage, "tm", "celebdf")
    plain = write_split(tmp_path / "plain", "test", 6, seed=20)
    clahe = write_split(tmp_path / "clahe", "test", 6, seed=20, preprocessing="clahe")
    parts = {"tm": final_parts(NAME, "tm", "celebdf"), "cm": final_parts(NAME, "cm", "ffpp")}
    derived = ClipScorer(storage, parts, apply_preprocessing=True)(pq.read_table(plain).to_pydict())
    direct = ClipScorer(storage, parts)(pq.read_table(clahe).to_pydict())
    as_is = ClipScorer(storage, parts)(pq.read_table(plain).to_pydict())
    np.testing.assert_allclose(derived["prob_tm"], direct["prob_tm"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(derived["prob_cm"], as_is["prob_cm"], rtol=1e-5, atol=1e-6)
    assert not np.allclose(as_is["prob_tm"], direct["prob_tm"])


def test_video_scores_take_the_maximum_face_and_report_several_face_fakes():
    """Rows of several faces: a video's probability is its top face's, its label fake when any face
    is, and the several-face fakes are scored against one-face fakes of the same family."""
    from ray_jobs.video_metrics import _faces_auc, video_scores
    from specialists.ensemble import AggregationConfig

    # v1: real, one face; v2: fake, one face; v3: fake with a real face 0 and a fake face 1; v4: real, two faces
    cols = {"video_id": np.array(["v1", "v2", "v2", "v3", "v3", "v3", "v3", "v4", "v4"]),
            "dataset": np.array(["dfdc"] * 9), "method": np.array(["real", "swap", "swap", "swap", "swap", "swap",
                                                                    "swap", "real", "real"]),
            "label": np.array([0, 1, 1, 0, 0, 1, 1, 0, 0]), "face_index": np.array([0, 0, 0, 0, 0, 1, 1, 0, 1]),
            "prob_cm": np.array([0.2, 0.7, 0.9, 0.1, 0.3, 0.6, 0.8, 0.3, 0.1])}
    s = video_scores(cols, ["cm"], AggregationConfig())
    assert list(s.videos) == ["dfdc:v1", "dfdc:v2", "dfdc:v3", "dfdc:v4"]
    assert list(s.video_labels) == [0, 1, 1, 0] and list(s.video_faces) == [1, 1, 2, 2]
    np.testing.assert_allclose(s.video_probs[:, 0], [0.2, 0.8, 0.7, 0.3])
    faces = _faces_auc(s.video_probs[:, 0], s)
    assert faces["families"] == ["swap"] and faces["one_face"]["fake_videos"] == 1
    assert faces["several_faces"]["video_auc"] == 1.0 and faces["several_faces"]["real_videos"] == 2
