"""The train job on a real Ray: job submission, S3 storage, worker and driver failures, bad configs."""

from __future__ import annotations

import io
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

from ray_jobs.sharding import stage_preprocessing
from tests.conftest import REPO, subprocess_env
from tests.helpers import write_learnable_shards

pytestmark = pytest.mark.ray
STAGES = ("ffpp", "celebdf", "dfdc")


def make_config(tmp_path: Path, name: str, specialists: list[str], shards_at: str | None = None,
                endpoint: str | None = None, **extra) -> Path:
    """A run config over learnable shards of every stage, each labelled with its stage's filter, written
    under ``tmp_path/shards`` or, with ``shards_at``, under that ``s3://`` prefix (``endpoint``)."""
    shards = {}
    filters = stage_preprocessing()
    for i, ds in enumerate(STAGES):
        folder = f"{shards_at}/{ds}" if shards_at else tmp_path / "shards" / ds
        if shards_at or not folder.exists():
            write_learnable_shards(folder, dataset=ds, chunks=3 if ds == "dfdc" else 1, n_train=96 if ds != "dfdc" else 144,
                                   seed=i, preprocessing=filters[ds].value, endpoint=endpoint)
        shards[ds] = str(folder)
    cfg = {
        "shards": shards, "storage_path": str(tmp_path / "runs"), "name": name, "specialists": specialists,
        "stage_overrides": {"ffpp": {"epochs": 2, "lr": 3.0e-3}, "celebdf": {"epochs": 1, "lr": 1.0e-3},
                            "dfdc": {"epochs": 1, "chunks": 2, "lr": 1.0e-3}},
        # tiny random models on purpose: several tests train ffpp at the recipe's fine-tuning lr
        "model": {"backbone": "test_efficientnet", "embed_dim": 32, "num_heads": 2, "allow_random_init": True},
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


def _s3_json(client, bucket: str, key: str) -> dict:
    return json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())


def test_job_submit_trains_every_stage_from_and_into_the_bucket(ray_head, s3_server, tmp_path, monkeypatch):
    """``ray job submit`` of the train job with shards and storage in the bucket, nothing local:
    two specialists through the whole chain (DFDC in chunks) stream their shards from the bucket
    (Ray Data and the workers' test scoring read the objects) and store their runs there; then
    evaluate scores the bucket's shards with the bucket's checkpoints. The Ray head got the
    credentials at ``ray start`` (conftest); the jobs carry only the endpoint."""
    for k, v in {**s3_server["env"], "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(k, v)  # for this process' evaluate (a client of the bucket like the nodes)
    bucket, endpoint, client = s3_server["bucket"], s3_server["endpoint"], s3_server["client"]
    config = make_config(tmp_path, "submitted", ["av", "tm"], shards_at=f"s3://{bucket}/shards", endpoint=endpoint,
                         storage_path=f"s3://{bucket}/runs", s3_endpoint=endpoint,
                         stage_overrides={"ffpp": {"epochs": 1}})
    cmd = [str(Path(sys.executable).parent / "ray"), "job", "submit", "--address", ray_head["dashboard"],
           "--working-dir", ".", "--", "python", "-m", "ray_jobs.train", "--config", str(config)]
    out = subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "succeeded" in (out.stdout + out.stderr).lower()
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="runs/submitted/")["Contents"]}
    for key in ("av", "tm"):
        for stage in STAGES:
            for f in ("checkpoint.pt", "meta.json", "COMPLETE.json"):
                assert f"runs/submitted/final/{key}-{stage}/{f}" in keys
            blob = client.get_object(Bucket=bucket, Key=f"runs/submitted/final/{key}-{stage}/checkpoint.pt")["Body"].read()
            payload = torch.load(io.BytesIO(blob), weights_only=True)
            assert payload["specialist"] == key and payload["stage"] == stage
        assert any(k.startswith(f"runs/submitted/{key}-ffpp/checkpoint_") for k in keys)
        celebdf = _s3_json(client, bucket, f"runs/submitted/final/{key}-celebdf/meta.json")
        assert celebdf["extra"]["init_from"] == f"s3://{bucket}/runs/submitted/final/{key}-ffpp"
        dfdc = _s3_json(client, bucket, f"runs/submitted/final/{key}-dfdc/COMPLETE.json")
        assert [h["chunk"] for h in dfdc["history"]] == [0, 1]
        assert 0.0 <= dfdc["test_auc"] <= 1.0 and 0.0 <= dfdc["test_video_auc"] <= 1.0
        # the test split was scored with the exported (best-by-validation) weights, by the workers
        assert dfdc["test_scored_epoch"] == dfdc["selected_epoch"]
        assert f"runs/submitted/{key}-dfdc/test_scores.json" in keys
    for f in ("train_report.md", "val_auc_curves.png"):
        assert f"runs/submitted/reports/{f}" in keys

    out = subprocess.run([sys.executable, "-m", "ray_jobs.evaluate", "--config", str(config), "--address",
                          ray_head["gcs"]], cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert f"report s3://{bucket}/runs/submitted/reports/evaluate-test" in out.stdout
    metrics = _s3_json(client, bucket, "runs/submitted/reports/evaluate-test/metrics.json")
    assert metrics["videos"] == 32 and metrics["shard_dirs"] == [f"s3://{bucket}/shards/dfdc"]
    assert {"av", "tm"} <= set(metrics["models"])
    local = [p for pattern in ("*.parquet", "checkpoint.pt") for p in tmp_path.rglob(pattern)]
    assert not local, local  # no local copy of the shards or the runs


def test_seeded_runs_with_preserve_order_reproduce_their_numbers(ray_head, tmp_path):
    """``seed`` + ``preserve_order``: two runs train on the same batches in the same order (the
    shard/block order and each worker's local shuffle are seeded per epoch), so they give the same
    losses, validation AUCs and test scores; unseeded shuffles made every run differ. And the
    driver-side test scoring (``score_test``'s path) of the workers' scored epoch matches their scores."""
    histories, scores = [], []
    for name in ("repro_a", "repro_b"):
        config = make_config(tmp_path, name, ["cm"], stages=["ffpp"], preserve_order=True, seed=3, keep_checkpoints=5,
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

    # the fallback (the driver scores a checkpoint with a Ray Data job, used when a restarted worker
    # never saw the exported epoch) gives the numbers the workers wrote for the same epoch's weights
    # (keep_checkpoints=5: every checkpoint of the run is kept, the workers' epoch among them)
    epoch = scores[1]["test_scored_epoch"]
    run = tmp_path / "runs" / "repro_b" / "cm-ffpp"
    folder = next(m.parent.name for m in run.glob("checkpoint_*/meta.json") if json.loads(m.read_text())["epoch"] == epoch)
    script = (
        "import json\n"
        "from ray_jobs.cluster import init_ray\nfrom ray_jobs.config import TrainConfig\nfrom ray_jobs.plan import plan\n"
        "from ray_jobs.scoring import score_shards\nfrom ray_jobs.worker import test_summary\n"
        f"cfg = TrainConfig.load({str(config)!r})\n"
        "storage, planned = plan(cfg, skip_complete=False)\n"
        "job = planned[0][1][0]\n"
        f"init_ray({ray_head['gcs']!r})\n"
        f"s = score_shards(storage, {{'cm': [cfg.name, job.run_name, {folder!r}]}}, job.test_files, batch_size=64)\n"
        "print('SCORES ' + json.dumps(test_summary(s['prob_cm'], s['label'], s['video_id'])))\n")
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=subprocess_env(), capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    driver = json.loads(next(line for line in out.stdout.splitlines() if line.startswith("SCORES "))[7:])
    for key in ("test_n", "test_video_n", "test_auc", "test_video_auc", "test_log_loss", "test_video_log_loss"):
        assert driver[key] == pytest.approx(scores[1][key], abs=1e-5), key


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
