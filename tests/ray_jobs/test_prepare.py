"""``interceptor prepare`` end to end on synthetic videos, with a real local Ray (no mocks).

* bad inputs (corrupt, truncated, zero-byte, no face, no audio, listed but missing) are reported
  in ``summary.json`` with a reason while the rest is prepared;
* from videos in an S3 bucket (moto on loopback) to shards in the bucket: a run killed midway and
  run again redoes no finished shard and ends with exactly the shards of an uninterrupted run; no
  ``.parquet`` is ever partial; a rerun writes nothing; nothing is copied to local disk;
* the synthetic benchmark is learnable from its shards: a small CNN separates real from fake
  above chance for every manipulation family on held-out clips.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from data_pipeline import synthetic
from data_pipeline.batch import rows_to_batch
from data_pipeline.filesystems import FsPath
from data_pipeline.shards import list_complete_shards, read_rows, shard_metadata
from data_pipeline.sources import read_manifest
from ray_jobs.config import ConfigError
from ray_jobs.prepare import main
from ray_jobs.sharding import PrepareConfig, plan_shards, run

REPO = Path(__file__).resolve().parents[2]
TINY = synthetic.config_for_scale("tiny")


@pytest.fixture(scope="module")
def ray_local():
    import ray

    from ray_jobs.cluster import init_ray

    init_ray(num_cpus=2)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    synthetic.generate(root, TINY, progress=None)
    return root


# --------------------------------------------------------------------------- config / CLI (no Ray)


def test_config_yaml_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "prep.yaml"
    path.write_text("dataset: celebdf\nsize: 96\nreader: {val_fraction: 0.2}\ndetector_options: {max_side: 192}\n")
    cfg = PrepareConfig.load(path, ["clips_per_video=3", "reader.test_list=/x.txt"])
    assert (cfg.dataset, cfg.size, cfg.clips_per_video) == ("celebdf", 96, 3)
    assert cfg.reader == {"val_fraction": 0.2, "test_list": "/x.txt"}
    clip = cfg.clip_config()
    assert clip.preprocessing.value == "clahe" and clip.detector_options == {"max_side": 192}
    assert PrepareConfig.load(None, ["dataset=dfdc"]).clip_config().preprocessing.value == "clahe_bilateral"
    assert cfg.out_dir().name == "celebdf-clahe-s96"
    with pytest.raises(ConfigError, match="unknown field"):
        PrepareConfig.load(None, ["colour=red"])
    with pytest.raises(ConfigError, match="unknown dataset"):
        PrepareConfig.load(None, ["dataset=imagenet"])


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--dataset", "ffpp", "--root", str(tmp_path / "absent"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("interceptor prepare: error:") and "not a directory" in err and "\n" not in err
    assert main(["--root", str(tmp_path), "--detector", "yunet", "--out", str(tmp_path / "o")]) == 2
    assert "model_path" in capsys.readouterr().err


def test_plan_is_deterministic(tiny: Path) -> None:
    rows = read_manifest("dfdc", tiny / "dfdc", parts_per_chunk=1)
    plans = plan_shards(rows, "dfdc", 3)
    assert plans == plan_shards(list(reversed(rows)), "dfdc", 3)
    assert {p.name.split("-")[2] for p in plans} == {"c000", "c001"}
    assert all(len({r.split for r in p.rows}) == 1 and len({r.chunk for r in p.rows}) == 1 for p in plans)
    assert sorted(r.video_id for p in plans for r in p.rows) == sorted(r.video_id for r in rows)


# --------------------------------------------------------------------------- bad inputs


@pytest.mark.ray
def test_bad_videos_are_reported_and_the_rest_prepared(tmp_path: Path, ray_local: None) -> None:
    root = tmp_path / "bench"
    synthetic.generate(root, synthetic.config_for_scale("tiny", datasets=("celebdf",)), progress=None)
    ds = root / "celebdf"
    truth = json.loads((ds / "synthetic_truth.json").read_text())
    listed = [line.split()[1] for line in (ds / "List_of_testing_videos.txt").read_text().splitlines()]
    missing = listed[0]  # listed in the dataset's metadata (the official test list)
    reals = sorted(v for v, t in truth.items() if t["label"] == 0 and v != missing)
    fakes = sorted(v for v, t in truth.items() if t["label"] == 1 and v != missing)
    zero, garbage, truncated, noface, noaudio = reals[0], reals[1], fakes[0], fakes[1], fakes[2]
    (ds / zero).write_bytes(b"")
    (ds / garbage).write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    data = (ds / truncated).read_bytes()
    (ds / truncated).write_bytes(data[: len(data) // 3])
    synthetic.write_sample(ds / noface, seed=1, cfg=TINY, face=False)
    synthetic.write_sample(ds / noaudio, seed=2, cfg=TINY, audio=False)
    (ds / missing).unlink()

    out = tmp_path / "shards"
    summary = run(PrepareConfig(dataset="celebdf", root=str(ds), out=str(out), size=32, clips_per_video=4, videos_per_shard=4))
    assert json.loads((out / "summary.json").read_text()) == summary
    reasons = {s["video_id"]: s["reason"] for s in summary["skipped"]}
    assert reasons[zero] == "empty file"
    assert reasons[garbage] == "unreadable"
    assert reasons[truncated] in {"truncated", "no frames", "decode error"}
    assert reasons[noface] == "no face"
    assert reasons[missing] == "missing file"
    assert len(reasons) == 5, reasons
    assert all(s["path"] == str(ds / s["video_id"]) for s in summary["skipped"])
    notes = {n["video_id"]: n["note"] for n in summary["notes"]}
    assert "no audio track" in notes[noaudio]
    assert summary["videos"] == {"listed": len(truth), "used": len(truth) - 5, "skipped": 5}

    rows = [r for p in list_complete_shards(out) for r in read_rows(p, ["video_id", "has_audio", "size", "preprocessing"])]
    assert {r["video_id"] for r in rows} == set(truth) - set(reasons)
    assert all(r["has_audio"] == (r["video_id"] != noaudio) for r in rows)
    assert {(r["size"], r["preprocessing"]) for r in rows} == {(32, "clahe")}
    assert summary["clips"] == len(rows)


@pytest.mark.ray
def test_splits_in_several_runs_and_other_settings_refused(tmp_path: Path, tiny: Path, ray_local: None) -> None:
    out = tmp_path / "o"
    common = dict(dataset="dfdc", root=str(tiny / "dfdc"), out=str(out), size=32, clips_per_video=2, max_videos=2)
    first = run(PrepareConfig(**common, splits=["val"]))
    assert set(first["per_split"]) == {"val"}
    both = run(PrepareConfig(**common, splits=["test"]))  # same settings: the folder grows
    assert set(both["per_split"]) == {"val", "test"} and set(first["shards"]) < set(both["shards"])
    with pytest.raises(ConfigError, match="other settings"):
        run(PrepareConfig(**{**common, "size": 48}, splits=["val"]))
    with pytest.raises(ConfigError, match="other settings"):
        run(PrepareConfig(**{**common, "max_videos": 3}, splits=["val"]))


@pytest.mark.skipif(importlib.util.find_spec("facenet_pytorch") is None, reason="facenet-pytorch not installed")
def test_mtcnn_runs_as_an_actor_stage_built_once(tmp_path: Path, tiny: Path, ray_local: None) -> None:
    """The CNN detector is an actor stage: one actor detects for every video of every shard and
    builds its model once; two-person DFDC videos give rows for both faces."""
    lines: list[str] = []
    summary = run(PrepareConfig(dataset="dfdc", root=str(tiny / "dfdc"), out=str(tmp_path / "o"), size=32,
                                clips_per_video=3, videos_per_shard=2, splits=["train"], max_videos=8,
                                detector="mtcnn", detector_actors=1, detect_batch_videos=2), log=lines.append)
    assert summary["videos"]["used"] >= 6 and len(summary["shards"]) >= 3
    actor_line = next(line for line in lines if "face detection ran in" in line)
    assert "1 actor process(es)" in actor_line and "built 1 detector(s)" in actor_line, actor_line
    assert next(line for line in lines if "face detection:" in line).startswith("[prepare] face detection: 1 mtcnn actor")
    rows = [r for f in list_complete_shards(tmp_path / "o")
            for r in read_rows(f, columns=["video_id", "face_index", "label", "original"])]
    faces = {}
    for r in rows:
        faces.setdefault(r["video_id"], set()).add(r["face_index"])
    truth = json.loads((tiny / "dfdc" / "synthetic_truth.json").read_text())
    # in train shards a two-person real keeps both faces, a two-person fake only its manipulated one
    expected = {vid: 1 if truth[vid]["label"] else len(truth[vid].get("faces", [None])) for vid in faces}
    assert all(len(seen) <= expected[vid] for vid, seen in faces.items())
    two = [vid for vid in faces if len(truth[vid].get("faces", [None])) == 2]
    assert two and sum(len(faces[vid]) == expected[vid] for vid in two) >= 0.75 * len(two)  # MTCNN, 3 clips
    assert all(r["label"] == 1 for r in rows if truth[r["video_id"]]["label"])  # the unchanged face left out
    assert all(r["original"] for r in rows if r["label"] == 1 and len(faces[r["video_id"]]) == 2)


# --------------------------------------------------------------------------- kill and resume


def _prepare_cmd(root: str, out: str, endpoint: str) -> list[str]:
    return [sys.executable, "-m", "ray_jobs.prepare", "--dataset", "dfdc", "--root", root, "--out", out,
            "--s3-endpoint", endpoint, "--size", "32", "--clips-per-video", "4", "--videos-per-shard", "1",
            "--num-cpus", "2", "--set", "reader.parts_per_chunk=1"]


def _wait_session_gone(sid: int, timeout: float = 60.0) -> None:
    """Wait for every process of the killed run's session to exit (Ray workers notice their
    raylet died); kill any stragglers of that session by pid."""
    deadline = time.time() + timeout
    while True:
        ps = subprocess.run(["ps", "-s", str(sid), "-o", "pid=,stat="], capture_output=True, text=True).stdout.split("\n")
        alive = [int(line.split()[0]) for line in ps if line.strip() and not line.split()[1].startswith("Z")]
        if not alive:
            return
        if time.time() > deadline:
            for pid in alive:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            return
        time.sleep(0.5)


def _table(path) -> pa.Table:
    return pq.read_table(path.path, filesystem=path.fs).replace_schema_metadata(None)


def _local_media(*folders: Path) -> set[Path]:
    """Parquet and video files in ``folders`` (recursively) and directly in the system temp folder."""
    found = {p for f in folders for pattern in ("*.parquet", "*.mp4", "*.parquet.tmp") for p in f.rglob(pattern)}
    tmp = Path(tempfile.gettempdir())
    return found | {p for pattern in ("*.parquet", "*.mp4", "*.tmp") for p in tmp.glob(pattern)}


@pytest.mark.ray
@pytest.mark.slow
def test_killed_run_resumes_to_the_same_shards(tmp_path: Path, tiny: Path, s3_server, monkeypatch) -> None:
    """From videos in a bucket to shards in a bucket (no local copy): a run killed midway and rerun
    redoes no finished shard and ends with exactly the shards of an uninterrupted run; no object is
    ever a partial shard; a rerun of a finished preparation writes nothing (versioned bucket)."""
    env = {**s3_server["env"], "AWS_EC2_METADATA_DISABLED": "true"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    client, endpoint, bucket = s3_server["client"], s3_server["endpoint"], "prepare-resume"
    client.create_bucket(Bucket=bucket)
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    videos = FsPath.of(f"s3://{bucket}/videos/dfdc", endpoint)
    pafs.copy_files(str(tiny / "dfdc"), videos.path, destination_filesystem=videos.fs)
    root, out, clean = str(videos), f"s3://{bucket}/shards/resumed", f"s3://{bucket}/shards/uninterrupted"
    local_before = _local_media(tmp_path, REPO / "data")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen(_prepare_cmd(root, out, endpoint), cwd=REPO, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def keys(prefix: str) -> dict[str, int]:
        """{key: number of versions written} under ``prefix``."""
        found: dict[str, int] = {}
        for v in client.list_object_versions(Bucket=bucket, Prefix=prefix).get("Versions", []):
            found[v["Key"]] = found.get(v["Key"], 0) + 1
        return found

    deadline = time.time() + 300
    while not any(k.endswith(".parquet") for k in keys("shards/resumed/")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    _wait_session_gone(proc.pid)

    planned = plan_shards(read_manifest("dfdc", root, endpoint, parts_per_chunk=1), "dfdc", 1)
    first = list_complete_shards(out, endpoint=endpoint)
    assert 1 <= len(first) < len(planned), "the run should have been killed midway"
    for p in first:  # every .parquet present is complete
        pq.read_metadata(p.path, filesystem=p.fs)
    assert "shards/resumed/summary.json" not in keys("shards/resumed/")

    done = subprocess.run(_prepare_cmd(root, out, endpoint), cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"{len(first)} reused" in done.stdout
    written = keys("shards/resumed/")
    assert all(n == 1 for n in written.values()), written  # no finished shard redone, nothing written twice

    rerun = subprocess.run(_prepare_cmd(root, out, endpoint), cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0 and f"0 shard(s) written, {len(planned)} reused" in rerun.stdout, rerun.stderr[-2000:]
    assert keys("shards/resumed/") == written  # a rerun writes nothing

    done = subprocess.run(_prepare_cmd(root, clean, endpoint), cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    resumed, uninterrupted = list_complete_shards(out, endpoint=endpoint), list_complete_shards(clean, endpoint=endpoint)
    names = sorted(p.name for p in resumed)
    assert names == sorted(p.name for p in uninterrupted) == sorted(p.name for p in planned)
    for a, b in zip(resumed, uninterrupted):
        assert _table(a).equals(_table(b)), a.name
        assert shard_metadata(a) == shard_metadata(b)
    s1 = json.loads((FsPath.of(out, endpoint) / "summary.json").read_text())
    s2 = json.loads((FsPath.of(clean, endpoint) / "summary.json").read_text())
    assert {k: v for k, v in s1.items() if k != "out"} == {k: v for k, v in s2.items() if k != "out"}
    assert s1["root"] == root and all(r.path.startswith(root + "/") for p in planned for r in p.rows)
    assert _local_media(tmp_path, REPO / "data") == local_before  # no local copy of the videos or the shards


# --------------------------------------------------------------------------- learnability


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Mann-Whitney AUC (probability a positive outscores a negative; ties count half)."""
    scores = np.concatenate([pos, neg])
    order = scores.argsort(kind="mergesort")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    for v in np.unique(scores):  # average ranks of ties
        tie = scores == v
        ranks[tie] = ranks[tie].mean()
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def _small_cnn(n_mels: int):
    """A deliberately small clip classifier: per-frame conv features (mean and spread over time
    for temporal artefacts), a mouth-region branch whose covariance over time with the audio
    energy captures lip sync, and mean absolute frame differences (flicker)."""
    import torch
    from torch import nn

    def block(i: int, o: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(i, o, 3, 2, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU())

    class SmallCNN(nn.Module):
        def __init__(self, c: int = 16) -> None:
            super().__init__()
            self.frames = nn.Sequential(block(3, c), block(c, 2 * c), block(2 * c, 2 * c), block(2 * c, 4 * c),
                                        nn.AdaptiveAvgPool2d(2), nn.Flatten())
            self.mouth = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1), nn.BatchNorm2d(8), nn.ReLU(),
                                       nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.audio = nn.Sequential(nn.Linear(n_mels, 8), nn.ReLU())
            self.head = nn.Sequential(nn.Linear(2 * 16 * c + 64 + 1, 32), nn.ReLU(), nn.Linear(32, 1))

        def forward(self, frames: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
            b, t, _, s, _ = frames.shape
            x = frames - 0.5
            f = self.frames(x.flatten(0, 1)).view(b, t, -1)
            m = self.mouth(x[..., int(s * 0.55): int(s * 0.8), int(s * 0.3): int(s * 0.7)].flatten(0, 1)).view(b, t, -1)
            a = self.audio(audio.transpose(1, 2) / 10).view(b, t, -1, 8).mean(2)
            m, a = m - m.mean(1, keepdim=True), a - a.mean(1, keepdim=True)
            sync = torch.einsum("bti,btj->bij", m, a).flatten(1) / t
            flicker = (x[:, 1:] - x[:, :-1]).abs().mean((1, 2, 3, 4)).unsqueeze(1) * 10
            return self.head(torch.cat([f.mean(1), f.std(1), sync * 10, flicker], 1)).squeeze(1)

    return SmallCNN()


@pytest.mark.ray
@pytest.mark.slow
def test_synthetic_benchmark_is_learnable_from_its_shards(tmp_path: Path, ray_local: None) -> None:
    import torch
    from torch import nn

    cfg = synthetic.config_for_scale("tiny", datasets=("ffpp",), ffpp_pairs=24, fakes_per_real=3,
                                     low_light_fraction=0.5, val_fraction=0.15, test_fraction=0.2)
    synthetic.generate(tmp_path / "bench", cfg, progress=None)
    out = tmp_path / "shards"
    run(PrepareConfig(dataset="ffpp", root=str(tmp_path / "bench" / "ffpp"), out=str(out), size=48,
                      clips_per_video=6, videos_per_shard=12, preprocessing="resize"))

    def load(splits: list[str]) -> dict:
        table = pa.concat_tables([pq.read_table(p) for p in list_complete_shards(out, split=splits)])
        return rows_to_batch(table, extras=("method",))

    train, held = load(["train"]), load(["val", "test"])
    torch.manual_seed(0)
    torch.set_num_threads(2)
    start = time.perf_counter()
    model = _small_cnn(train["audio"].shape[1])
    x, a, y = train["frames"], train["audio"], train["label"].float()
    epochs, batch = 20, 32
    opt = torch.optim.AdamW(model.parameters(), 3e-3, weight_decay=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 5e-3, total_steps=epochs * ((len(y) + batch - 1) // batch))
    pos_weight = (y == 0).sum() / (y == 1).sum()  # class balance
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(y)).split(batch):
            loss = nn.functional.binary_cross_entropy_with_logits(model(x[idx], a[idx]), y[idx], pos_weight=pos_weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    with torch.no_grad():
        scores = model(held["frames"], held["audio"]).numpy()
    seconds = time.perf_counter() - start
    methods, labels = np.array(held["method"]), held["label"].numpy()
    aucs = {m: _auc(scores[methods == m], scores[labels == 0]) for m in sorted(set(methods)) if m != "real"}
    print(f"per-family held-out clip AUC ({len(y)} train clips, {len(labels)} held-out, {seconds:.1f} s training): "
          + ", ".join(f"{k} {v:.2f}" for k, v in aucs.items()))
    assert set(aucs) == set(synthetic.FAMILIES)
    assert min(aucs.values()) > 0.6, aucs


# --------------------------------------------------------------------------- a real face, end to end


@pytest.mark.skipif(importlib.util.find_spec("facenet_pytorch") is None, reason="facenet-pytorch not installed")
def test_real_photograph_video_is_prepared_with_mtcnn_and_predicted(tmp_path: Path, ray_local: None, capsys) -> None:
    """A 720p H.264 video of a real photograph (matplotlib's portrait, moving and scaled) in a DFDC
    layout: ``auto`` picks MTCNN for real videos, every clip's crop holds the annotated face, and
    ``predict`` scores the video from the prepared clip settings."""
    from ray_jobs.predict import main as predict_main
    from ray_jobs.storage import Storage
    from tests.ray_jobs.test_predict import NAME, write_member
    from tests.real_face import Motion, make_real_face_video

    part = tmp_path / "dfdc" / "dfdc_train_part_0"
    video = make_real_face_video(part / "grace.mp4", Motion(fps=8, seconds=3.0), audio=True)
    (part / "metadata.json").write_text(json.dumps({"grace.mp4": {"label": "REAL", "split": "train", "original": None}}))
    lines: list[str] = []
    out = tmp_path / "shards"
    summary = run(PrepareConfig(dataset="dfdc", root=str(tmp_path / "dfdc"), out=str(out), size=64, clips_per_video=4,
                                reader={"val_fraction": 0.0, "test_fraction": 0.0}), log=lines.append)
    assert "[prepare] detector auto -> mtcnn" in lines and summary["videos"]["used"] == 1
    rows = [r for f in list_complete_shards(out) for r in read_rows(f, columns=["face_index", "face_box", "clip_index"])]
    assert len(rows) == 4 and {r["face_index"] for r in rows} == {0}
    from data_pipeline.faces import Box
    from data_pipeline.video import sample_clip_starts

    starts = sample_clip_starts(len(video.boxes), 4, 4)
    for r in rows:  # the face inside each clip's crop square (1.6x the face box) is the annotated face
        x0, y0, x1, y1 = r["face_box"]
        side, cx, cy = (x1 - x0) / 1.6, (x0 + x1) / 2, (y0 + y1) / 2
        truth = video.boxes[starts[r["clip_index"]] + 1]
        assert Box(cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2).iou(truth) >= 0.5, (r, truth)
    storage = Storage(str(tmp_path / "runs"))
    write_member(storage, "cm", "ffpp")
    # an ensemble of one member, with the clip settings this folder was prepared with
    from ray_jobs.config import StageChain
    from ray_jobs.layout import ensemble_parts
    from ray_jobs.members import discover_members
    from specialists.ensemble import fit_ensemble

    members = discover_members(storage, NAME, StageChain.load())
    rng = np.random.default_rng(0)
    ens = fit_ensemble({"cm": rng.uniform(size=40)}, (np.arange(40) % 2),
                       extra={"checkpoints": {m.specialist: m.record() for m in members},
                              "clips": {"clips_per_video": 4, "margin": 0.3, "detector": "mtcnn"}})
    storage.write_json(ens.to_dict(), *ensemble_parts(NAME))
    assert predict_main([str(video.path), "--storage-path", storage.uri, "--name", NAME, "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert result["face_found"] and len(result["faces"]) == 1 and result["prob_fake"] == result["faces"][0]["prob_fake"]
