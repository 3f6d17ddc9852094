"""The train job on a real Ray: job submission, S3 storage, worker and driver failures, bad configs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import REPO, subprocess_env
from tests.helpers import write_learnable_shards

pytestmark = pytest.mark.ray
STAGES = ("ffpp", "celebdf", "dfdc")


def make_config(tmp_path: Path, name: str, specialists: list[str], **extra) -> Path:
    shards = {}
    for i, ds in enumerate(STAGES):
        folder = tmp_path / "shards" / ds
        if not folder.exists():
            write_learnable_shards(folder, dataset=ds, chunks=3 if ds == "dfdc" else 1, n_train=96 if ds != "dfdc" else 144,
                                   seed=i)
        shards[ds] = str(folder)
    cfg = {
        "shards": shards, "storage_path": str(tmp_path / "runs"), "name": name, "specialists": specialists,
        "stage_overrides": {"ffpp": {"epochs": 2, "lr": 3.0e-3}, "celebdf": {"epochs": 1, "lr": 1.0e-3},
                            "dfdc": {"epochs": 1, "chunks": 2, "lr": 1.0e-3}},
        "model": {"backbone": "test_efficientnet", "embed_dim": 32, "num_heads": 2},
        "batch_size": 16, "cpus_per_worker": 0.5, "log_every": 0,
    }
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(cfg.get(k), dict):
            cfg[k] = {**cfg[k], **v}
        else:
            cfg[k] = v
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def final_dir(tmp_path: Path, name: str, key: str, stage: str) -> Path:
    return tmp_path / "runs" / name / "final" / f"{key}-{stage}"


def start_train(config: Path, address: str, log: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ray_jobs.train", "--config", str(config), "--address", address,
                             *args], cwd=REPO, env=subprocess_env(), stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def wait_for(predicate, proc: subprocess.Popen, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = predicate()
        if got:
            return got
        if proc.poll() is not None:
            raise AssertionError(f"train exited (rc={proc.returncode}) before {what}")
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_job_submit_trains_every_specialist_through_the_chain(ray_head, tmp_path):
    config = make_config(tmp_path, "submitted", ["av", "tm"])
    cmd = [str(Path(sys.executable).parent / "ray"), "job", "submit", "--address", ray_head["dashboard"],
           "--working-dir", ".", "--", "python", "-m", "ray_jobs.train", "--config", str(config)]
    out = subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "succeeded" in (out.stdout + out.stderr).lower()
    for key in ("av", "tm"):
        for stage in STAGES:
            d = final_dir(tmp_path, "submitted", key, stage)
            assert (d / "COMPLETE.json").is_file() and (d / "checkpoint.pt").is_file(), d
            payload = torch.load(d / "checkpoint.pt", weights_only=True)
            assert payload["specialist"] == key and payload["stage"] == stage
        celebdf = json.loads((final_dir(tmp_path, "submitted", key, "celebdf") / "meta.json").read_text())
        assert celebdf["extra"]["init_from"] == str(final_dir(tmp_path, "submitted", key, "ffpp"))
        dfdc = json.loads((final_dir(tmp_path, "submitted", key, "dfdc") / "COMPLETE.json").read_text())
        assert [h["chunk"] for h in dfdc["history"]] == [0, 1]
        assert 0.0 <= dfdc["test_auc"] <= 1.0 and 0.0 <= dfdc["test_video_auc"] <= 1.0
        # the test split was scored with the exported (best-by-validation) weights, by the workers
        assert dfdc["test_scored_epoch"] == dfdc["selected_epoch"]
        assert (tmp_path / "runs" / "submitted" / f"{key}-dfdc" / "test_scores.json").is_file()
    reports = tmp_path / "runs" / "submitted" / "reports"
    assert (reports / "train_report.md").is_file() and (reports / "val_auc_curves.png").is_file()


def test_s3_storage_chains_stages_through_the_bucket(ray_head, s3_server, tmp_path):
    config = make_config(tmp_path, "s3run", ["cm"], stages=["ffpp", "celebdf"])
    env_extra = {**s3_server["env"]}
    proc = subprocess.run([sys.executable, "-m", "ray_jobs.train", "--config", str(config), "--address",
                           ray_head["gcs"], "--storage-path", f"s3://{s3_server['bucket']}/runs",
                           "--s3-endpoint", s3_server["endpoint"]],
                          cwd=REPO, env=subprocess_env(**env_extra), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    client = s3_server["client"]
    keys = {o["Key"] for o in client.list_objects_v2(Bucket="interceptor", Prefix="runs/s3run/")["Contents"]}
    for stage in ("ffpp", "celebdf"):
        for f in ("checkpoint.pt", "meta.json", "COMPLETE.json"):
            assert f"runs/s3run/final/cm-{stage}/{f}" in keys
    assert any(k.startswith("runs/s3run/cm-ffpp/checkpoint_") for k in keys)
    meta = json.loads(client.get_object(Bucket="interceptor", Key="runs/s3run/final/cm-celebdf/meta.json")["Body"].read())
    assert meta["extra"]["init_from"] == "s3://interceptor/runs/s3run/final/cm-ffpp"
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("checkpoint.pt"))


def test_driver_side_test_scoring_matches_the_workers(ray_head, tmp_path):
    """The fallback (the driver scores the exported checkpoint with a Ray Data job, used when a
    restarted worker never saw the best epoch) gives the numbers the workers wrote."""
    config = make_config(tmp_path, "scored", ["cm"], stages=["ffpp"], stage_overrides={"ffpp": {"epochs": 1}})
    log = tmp_path / "scored.log"
    proc = start_train(config, ray_head["gcs"], log)
    assert proc.wait(timeout=900) == 0, log.read_text()[-4000:]
    workers = json.loads((tmp_path / "runs" / "scored" / "cm-ffpp" / "test_scores.json").read_text())
    assert workers["test_scored_epoch"] == 1
    script = (
        "import json\n"
        "from ray_jobs.cluster import init_ray\n"
        "from ray_jobs.config import TrainConfig\nfrom ray_jobs.plan import plan\nfrom ray_jobs.trainer import score_test\n"
        f"cfg = TrainConfig.load({str(config)!r})\n"
        "storage, planned = plan(cfg, skip_complete=False)\n"
        f"init_ray({ray_head['gcs']!r})\n"
        "print('SCORES ' + json.dumps(score_test(planned[0][1][0], cfg, storage)))\n")
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=subprocess_env(), capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    driver = json.loads(next(line for line in out.stdout.splitlines() if line.startswith("SCORES "))[7:])
    for key in ("test_n", "test_video_n", "test_auc", "test_video_auc", "test_log_loss", "test_video_log_loss"):
        assert driver[key] == pytest.approx(workers[key], abs=1e-5), key


def test_seeded_runs_with_preserve_order_reproduce_their_numbers(ray_head, tmp_path):
    """``seed`` + ``preserve_order``: two runs train on the same batches in the same order (the
    shard/block order and each worker's local shuffle are seeded per epoch), so they give the same
    losses, validation AUCs and test scores; unseeded shuffles made every run differ."""
    histories, scores = [], []
    for name in ("repro_a", "repro_b"):
        config = make_config(tmp_path, name, ["cm"], stages=["ffpp"], preserve_order=True, seed=3,
                             stage_overrides={"ffpp": {"epochs": 3}})
        log = tmp_path / f"{name}.log"
        proc = start_train(config, ray_head["gcs"], log)
        assert proc.wait(timeout=900) == 0, log.read_text()[-4000:]
        report = json.loads((final_dir(tmp_path, name, "cm", "ffpp") / "COMPLETE.json").read_text())
        histories.append([(h["train_loss"], h["val_auc"], h["val_log_loss"]) for h in report["history"]])
        scores.append(json.loads((tmp_path / "runs" / name / "cm-ffpp" / "test_scores.json").read_text()))
    assert len(histories[0]) == 3
    assert histories[0] == histories[1]
    for key in ("test_auc", "test_log_loss", "test_video_auc"):
        assert scores[0][key] == scores[1][key], key


def _worker_pids() -> list[int]:
    out = subprocess.run(["pgrep", "-f", "RayTrainWorker"], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def _registered_epochs(run_dir: Path) -> list[int]:
    """Epochs of the checkpoints Ray Train has registered (a checkpoint folder can exist on disk
    before its report is registered; a worker killed in between rightly restarts from scratch)."""
    try:
        snapshot = json.loads((run_dir / "checkpoint_manager_snapshot.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):  # not written yet, or being rewritten
        return []
    return [r["metrics"]["epoch"] for r in snapshot.get("checkpoint_results", [])]


def test_killed_worker_is_replaced_and_the_run_completes(ray_head, tmp_path):
    # an epoch of this tiny task takes well under a second on a fast machine: enough epochs that the
    # kill surely lands mid-run (checked below from the checkpoints on disk at the moment of the kill)
    epochs = 24
    config = make_config(tmp_path, "faulty", ["cm"], stages=["ffpp"],
                         stage_overrides={"ffpp": {"epochs": epochs, "lr": 3.0e-3}}, batch_size=8)
    log = tmp_path / "faulty.log"
    proc = start_train(config, ray_head["gcs"], log)
    run_dir = tmp_path / "runs" / "faulty" / "cm-ffpp"
    wait_for(lambda: _registered_epochs(run_dir), proc, 600, "the first registered checkpoint")
    pids = wait_for(_worker_pids, proc, 60, "a training worker")
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    reached = max(_registered_epochs(run_dir))
    assert reached < epochs, f"the run had already finished ({reached} epochs) when the worker was killed"
    assert proc.wait(timeout=900) == 0, log.read_text()[-4000:]
    text = log.read_text()
    assert "resumed at epoch" in text, text[-3000:]
    done = json.loads((final_dir(tmp_path, "faulty", "cm", "ffpp") / "COMPLETE.json").read_text())
    assert max(h["epoch"] for h in done["history"]) == epochs
    # scored by the workers if the restarted one saw the best epoch, else from the export: either
    # way the test scores belong to the exported checkpoint
    assert done["test_scored_epoch"] == done["selected_epoch"] and 0.0 <= done["test_auc"] <= 1.0


def test_killed_driver_rerun_trains_nothing_twice(ray_head, tmp_path):
    config = make_config(tmp_path, "rerun", ["rr"], stage_overrides={"dfdc": {"epochs": 1, "chunks": 3}})
    log1 = tmp_path / "first.log"
    proc = start_train(config, ray_head["gcs"], log1)
    dfdc_run = tmp_path / "runs" / "rerun" / "rr-dfdc"
    def chunk_registered():
        # Ray Train registers a reported checkpoint in its run snapshot; only registered ones are restored
        snap = dfdc_run / "checkpoint_manager_snapshot.json"
        try:
            return snap.is_file() and json.loads(snap.read_text()).get("latest_checkpoint_result")
        except json.JSONDecodeError:
            return False

    wait_for(chunk_registered, proc, 900, "a registered DFDC chunk checkpoint")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    stamps = {s: (final_dir(tmp_path, "rerun", "rr", s) / "COMPLETE.json").stat().st_mtime_ns for s in ("ffpp", "celebdf")}
    assert not (final_dir(tmp_path, "rerun", "rr", "dfdc") / "COMPLETE.json").exists()
    time.sleep(3)

    log2 = tmp_path / "second.log"
    proc = start_train(config, ray_head["gcs"], log2)
    assert proc.wait(timeout=900) == 0, log2.read_text()[-4000:]
    text = log2.read_text()
    assert "stage ffpp: already complete for rr" in text and "stage celebdf: already complete for rr" in text
    assert "[rr-dfdc] resumed at epoch" in text, text[-3000:]
    assert "[rr-dfdc] epoch 1/3 " not in text  # the finished first chunk is not trained again
    for s, stamp in stamps.items():
        assert (final_dir(tmp_path, "rerun", "rr", s) / "COMPLETE.json").stat().st_mtime_ns == stamp
    done = json.loads((final_dir(tmp_path, "rerun", "rr", "dfdc") / "COMPLETE.json").read_text())
    assert sorted({h["chunk"] for h in done["history"]}) == [0, 1, 2]


@pytest.mark.parametrize("change, message", [
    ({"specialists": ["zz"]}, "unknown specialist 'zz'; known: av, bg, cm, ll, rr, tm"),
    ({"shards": {"ffpp": "/nonexistent/shards"}}, "stage ffpp: shard folder for 'ffpp' not found: /nonexistent/shards"),
    ({"stages": ["celebdf"]}, "stage celebdf: its predecessor 'ffpp' has no final checkpoint for 'cm'"),
    ({"storage_path": "FILE/sub"}, "is not writable"),
    ({"train_log_level": "LOUD"}, "train_log_level 'LOUD' is not a logging level"),
])
def test_bad_run_configs_fail_before_any_worker_starts(tmp_path, change, message):
    if change.get("storage_path") == "FILE/sub":
        (tmp_path / "afile").write_text("x")
        change = {"storage_path": str(tmp_path / "afile" / "sub")}
    config = make_config(tmp_path, "bad", change.pop("specialists", ["cm"]), **change)
    out = subprocess.run([sys.executable, "-m", "ray_jobs.train", "--config", str(config)], cwd=REPO,
                         env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    lines = [l for l in out.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("interceptor train: error:") and message in lines[0], out.stderr
    assert "ray" not in out.stdout.lower()
