"""``interceptor tune`` on a real local Ray: two specialists' trials run side by side under one cap,
ASHA stops poor trials, the best config and checkpoint of each specialist land where the summary says,
the chain trains with them (``--from-sweep``), a killed sweep resumes without rerunning finished
trials, and bad search spaces are refused before Ray starts.

The swept stage is ``celebdf`` (focal loss with alpha: lr, gamma and alpha are all searched). Its
predecessor ``ffpp`` is trained in-process on the same learnable task and stored as the chain leaves
a finished stage (``final/<key>-ffpp/`` + ``COMPLETE.json``), so every trial initialises from a model
that already separates the classes: a sane lr keeps val AUC near 1 from the first epoch, a huge one
wrecks it, and ASHA stops that trial at its first rung.
"""

from __future__ import annotations

import csv
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

from ray_jobs.checkpoints import build_payload, save_checkpoint
from ray_jobs.config import StageChain
from ray_jobs.layout import COMPLETE_FILE, final_parts
from ray_jobs.runner import SpecialistRunner
from ray_jobs.sweep_search import RandomSearch, SpecialistASHA, SpecialistSearch
from specialists import create_model
from tests.conftest import REPO, subprocess_env
from tests.helpers import TINY, batches, learnable_clips, write_learnable_shards

KEY = "cm"
OTHER = "tm"  # swept together with KEY in the first sweep
NAME = "tuned"
EPOCHS = 3  # per trial; ASHA rungs at epochs 1 and 2 with grace 1, reduction factor 2
TERRIBLE_LR = 0.5  # measured: wrecks a trained tiny model within one epoch (val AUC ~0.6 vs ~1.0)


# ----------------------------------------------------------------------------------- fixtures

def seed_previous_stage(runs: Path, name: str, key: str) -> Path:
    """Train ffpp in-process (seconds) and store it where the chain puts a finished stage."""
    recipe = StageChain.load().get("ffpp").replace(lr=3e-3, epochs=3)
    torch.manual_seed(0)
    model = create_model(key, **TINY)
    runner = SpecialistRunner(model, recipe, seed=0, log_every=0)
    train, val = learnable_clips(96, seed=11), learnable_clips(32, seed=12)
    metrics = runner.fit(lambda epoch: batches(train, 32, seed=epoch), lambda: batches(val, 32))
    assert metrics["val_auc"] > 0.9, metrics
    folder = runs.joinpath(*final_parts(name, key, "ffpp"))
    save_checkpoint(folder, build_payload(runner.state_dict(), model.config, recipe, metrics))
    (folder / COMPLETE_FILE).write_text(json.dumps({"specialist": key, "stage": "ffpp", "val_auc": metrics["val_auc"]}))
    return folder


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> dict:
    """Celeb-DF-like shards, a trained ffpp stage in storage, and the train config of the run."""
    root = tmp_path_factory.mktemp("tune")
    shards = write_learnable_shards(root / "shards" / "celebdf", dataset="celebdf", preprocessing="clahe", seed=3)
    runs = root / "runs"
    for key in (KEY, OTHER):
        seed_previous_stage(runs, NAME, key)
    train = {
        "shards": {"celebdf": str(shards)}, "storage_path": str(runs), "name": NAME, "specialists": [KEY, OTHER],
        "stage_overrides": {"celebdf": {"epochs": EPOCHS, "lr": 1.0e-3}},
        "model": {"backbone": "test_efficientnet", "embed_dim": 32, "num_heads": 2},
        "batch_size": 32, "cpus_per_worker": 0.5, "log_every": 0, "score_test": False,
    }
    (root / "train.yaml").write_text(yaml.safe_dump(train))
    return {"root": root, "runs": runs, "train_yaml": root / "train.yaml"}


def sweep_yaml(ws: dict, sweep: str, **settings) -> Path:
    """A sweep config referencing the run's train config (``train_config:``, relative to this file)."""
    data = {"train_config": "train.yaml", "sweep": sweep, "stage": "celebdf", "seed": 0, **settings}
    path = ws["root"] / f"{sweep}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def sweep_dir(ws: dict, sweep: str) -> Path:
    return ws["runs"] / NAME / "sweeps" / sweep


def tune_cmd(config: Path, address: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "ray_jobs.tune", "--config", str(config), "--address", address, *args]


def read_trials(folder: Path) -> list[dict]:
    with (folder / "trials.csv").open() as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def finished_sweep(ray_head, workspace) -> dict:
    """Two specialists, two trials each, two trials at a time in all: the specialists take turns,
    so their recipe trials start together, then each one's terrible lr. A terrible trial can only
    start once a recipe trial finished, by when its own specialist's recipe trial, started at the
    same time, has reported epoch 1: ASHA's first rung (per specialist) holds a sane val AUC when
    the terrible trial arrives and stops it there."""
    config = sweep_yaml(workspace, "s1", num_samples=2, max_concurrent=2, grace_period=1, reduction_factor=2,
                        space={"lr": [1.0e-4, 1.0], "points": [{"lr": TERRIBLE_LR}]})
    start = time.time()
    out = subprocess.run(tune_cmd(config, ray_head["gcs"]), cwd=REPO, env=subprocess_env(), capture_output=True,
                         text=True, timeout=600)
    wall = time.time() - start
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    print(f"\n[test_tune] 2x2-trial sweep: {wall:.1f} s wall (subprocess, incl. imports)")
    return {"stdout": out.stdout, "wall_s": wall, "dir": sweep_dir(workspace, "s1")}


# ----------------------------------------------------------------------------------- tests

def most_at_once(spans: list[tuple[float, float]], slack: float = 1.0) -> int:
    """The most spans running at one moment, each shrunk by ``slack`` s at both ends (Tune's report
    ``timestamp`` is whole seconds)."""
    events = sorted([(a + slack, 1) for a, b in spans if b - a > 2 * slack]
                    + [(b - slack, -1) for a, b in spans if b - a > 2 * slack], key=lambda e: (e[0], e[1]))
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


@pytest.mark.ray
def test_sweep_runs_specialists_side_by_side_under_one_cap(finished_sweep):
    detail = json.loads((finished_sweep["dir"] / "trials.json").read_text())["trials"]
    spans = {d["trial_id"]: (d["specialist"], d["started"], d["ended"]) for d in detail}
    t0 = min(t[1] for t in spans.values())
    print("[test_tune] trials, s after the first start: " + ", ".join(
        f"{t[0]} {k} {t[1] - t0:.0f}-{t[2] - t0:.0f}" for k, t in sorted(spans.items(), key=lambda kv: kv[1][1])))
    assert len(spans) == 4 and {t[0] for t in spans.values()} == {KEY, OTHER}, spans
    # trials of the two specialists ran at the same time (by more than the timestamps' resolution) ...
    overlap = max(min(a[2], b[2]) - max(a[1], b[1]) for a in spans.values() for b in spans.values()
                  if a[0] == KEY and b[0] == OTHER)
    assert overlap > 3, spans
    # ... and never more than max_concurrent=2 of them, whichever specialist
    assert most_at_once([(t[1], t[2]) for t in spans.values()]) <= 2, spans


@pytest.mark.ray
def test_sweep_stops_a_poor_trial_early_and_stores_the_best(finished_sweep, workspace):
    folder, stdout = finished_sweep["dir"], finished_sweep["stdout"]
    trials = read_trials(folder)
    assert len({t["trial_id"] for t in trials}) == 4 and not any(t["status"] == "error" for t in trials), trials
    assert sorted(t["specialist"] for t in trials) == sorted([KEY, KEY, OTHER, OTHER]), trials
    # ASHA (time_attr=epoch, per specialist) stopped each specialist's terrible lr before its last
    # epoch: KEY's at its first rung; OTHER's (measured: the temporal model can keep val AUC 1.0 for
    # an epoch at that lr) at the first rung where it fell below OTHER's recipe trial
    for key in (KEY, OTHER):
        mine = [t for t in trials if t["specialist"] == key]
        terrible = next(t for t in mine if float(t["lr"]) == TERRIBLE_LR)
        assert terrible["status"] == "stopped" and int(terrible["epochs"]) < EPOCHS, terrible
        assert any(t["status"] == "finished" and int(t["epochs"]) == EPOCHS for t in mine), mine
    assert int(next(t for t in trials if t["specialist"] == KEY and float(t["lr"]) == TERRIBLE_LR)["epochs"]) == 1

    # every trial's config and per-epoch metrics are stored; the recipe trials started from ffpp's weights
    detail = json.loads((folder / "trials.json").read_text())["trials"]
    assert {d["trial_id"] for d in detail} == {t["trial_id"] for t in trials}
    for d in detail:
        assert set(d["hparams"]) == {"lr", "focal_gamma", "focal_alpha"}
        assert [h["epoch"] for h in d["history"]] == list(range(1, d["epochs"] + 1))
        assert d["run"].endswith(f"{d['specialist']}-{d['trial_id']}")
    recipe = {"lr": 1e-3, "focal_gamma": 2.0, "focal_alpha": 0.25}
    for key in (KEY, OTHER):
        recipe_trial = next(d for d in detail if d["specialist"] == key and d["hparams"] == recipe)
        assert recipe_trial["history"][0]["val_auc"] > 0.9, recipe_trial  # initialised from the trained ffpp stage
    assert (folder / "trials.png").stat().st_size > 10_000
    assert (folder / "tune" / f"{KEY}_{OTHER}").is_dir()  # one Tune experiment for both

    # the best config and checkpoint of each specialist are where the summary says
    best_line = next(line for line in stdout.splitlines() if line.startswith("[tune] best config: "))
    best_path = Path(best_line.split(": ", 1)[1].split(" ")[0])
    assert best_path == folder / "best.json"
    best = json.loads(best_path.read_text())
    assert best["stage"] == "celebdf" and set(best["best"]) == {KEY, OTHER}
    for key in (KEY, OTHER):
        entry = best["best"][key]
        assert set(entry["hparams"]) == {"lr", "focal_gamma", "focal_alpha"}
        summary_ckpt = next(line for line in stdout.splitlines() if line.startswith(f"[tune] best {key}: "))
        assert summary_ckpt.endswith(f"checkpoint {entry['checkpoint']}")
        ckpt = Path(entry["checkpoint"])
        assert ckpt == folder / "best" / key and (ckpt / "checkpoint.pt").is_file()
        payload = torch.load(ckpt / "checkpoint.pt", weights_only=True)
        assert payload["stage"] == "celebdf" and payload["specialist"] == key
        assert payload["recipe"]["lr"] == pytest.approx(entry["hparams"]["lr"])
        assert payload["recipe"]["focal_gamma"] == pytest.approx(entry["hparams"]["focal_gamma"])
        assert payload["metrics"]["val_auc"] == pytest.approx(entry["val_auc"])
        assert entry["val_auc"] == pytest.approx(max(float(t["best_val_auc"]) for t in trials if t["specialist"] == key))


@pytest.mark.ray
def test_chain_trains_the_stage_with_the_swept_values(finished_sweep, ray_head, workspace):
    best = json.loads((finished_sweep["dir"] / "best.json").read_text())["best"][KEY]["hparams"]
    out = subprocess.run([sys.executable, "-m", "ray_jobs.train", "--config", str(workspace["train_yaml"]),
                          "--address", ray_head["gcs"], "--stages", "celebdf", "--from-sweep", "s1", "--specialists", KEY,
                          "--set", "stage_overrides.celebdf.epochs=1"],
                         cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    final = workspace["runs"].joinpath(*final_parts(NAME, KEY, "celebdf"))
    recipe = json.loads((final / "meta.json").read_text())["recipe"]
    for k, v in best.items():
        assert recipe[k] == pytest.approx(v), (k, recipe[k], v)
    assert recipe["lr"] != 1e-3 or best["lr"] == 1e-3  # the value came from the sweep, not the config
    assert json.loads((final / COMPLETE_FILE).read_text())["recipe"]["lr"] == pytest.approx(best["lr"])


def _finished_trial(folder: Path) -> Path | None:
    done = sorted((folder / "trials").glob("*/trial.json")) if (folder / "trials").is_dir() else []
    return done[0] if done else None


def _snapshot(run: Path) -> dict[str, int]:
    return {str(p.relative_to(run)): p.stat().st_mtime_ns for p in sorted(run.rglob("*")) if p.is_file()}


@pytest.mark.ray
def test_killed_sweep_resumes_without_rerunning_finished_trials(ray_head, workspace):
    """Two trials, one at a time: SIGKILL the sweep's process group as soon as the first trial
    finished, rerun the same command, and the second trial runs while the first stays untouched."""
    samples = 2
    config = sweep_yaml(workspace, "s2", num_samples=samples, max_concurrent=1, grace_period=1, reduction_factor=2,
                        space={"lr": [3.0e-4, 3.0e-3], "start_with_recipe": False},
                        train={"specialists": [KEY], "stage_overrides": {"celebdf": {"epochs": 2}}})
    folder = sweep_dir(workspace, "s2")
    log = (workspace["root"] / "s2-killed.log").open("w")
    proc = subprocess.Popen(tune_cmd(config, ray_head["gcs"]), cwd=REPO, env=subprocess_env(), stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 400
        while _finished_trial(folder) is None:
            assert proc.poll() is None, f"sweep exited (rc={proc.returncode}) before a trial finished"
            assert time.time() < deadline, "no trial finished in time"
            time.sleep(0.5)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the driver and everything it started in its session
        proc.wait(timeout=60)
        log.close()
    killed_at = time.time()
    done = _finished_trial(folder)
    first_id = json.loads(done.read_text())["trial_id"]
    before = _snapshot(done.parent)
    assert any(name.startswith("checkpoint_") for name in before) and not (folder / "best.json").exists()

    out = subprocess.run(tune_cmd(config, ray_head["gcs"]), cwd=REPO, env=subprocess_env(), capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    assert f"[tune] {KEY}: resuming the sweep" in out.stdout
    assert _snapshot(done.parent) == before  # the finished trial was neither retrained nor rewritten
    trials = read_trials(folder)
    ids = {t["trial_id"] for t in trials}
    assert len(trials) == samples and len(ids) == samples and first_id in ids, trials
    assert all(t["status"] in ("finished", "stopped") for t in trials), trials
    (second,) = ids - {first_id}
    checkpoints = list((folder / "trials" / f"{KEY}-{second}").glob("checkpoint_*"))
    assert checkpoints and all(c.stat().st_mtime > killed_at for c in checkpoints)  # it trained after the resume
    assert json.loads((folder / "best.json").read_text())["best"][KEY]["trial_id"] in ids


@pytest.mark.parametrize("args, message", [
    (["--lr-range", "0", "1e-3"], "space.lr: learning rates must be > 0"),
    (["--lr-range", "1e-2", "1e-4"], "space.lr: lower bound 0.01 must be below the upper bound 0.0001"),
    (["--gamma-range", "-1", "2"], "space.focal_gamma: gamma must be >= 0"),
    (["--alpha-range", "0.2", "1.5"], "space.focal_alpha: alpha must lie within [0, 1]"),
    (["--set", "space.points=[{lr: 5.0}]"], "space.lr: a point's value 5 lies outside the bounds"),
])
def test_insane_search_space_is_refused_before_ray_starts(workspace, capsys, args, message):
    import ray

    from ray_jobs.tune import main

    config = sweep_yaml(workspace, "bad")
    assert main(["--config", str(config), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("interceptor tune: error: ") and message in err[0], err
    assert not ray.is_initialized()
    assert not sweep_dir(workspace, "bad").exists()


def test_cli_refuses_a_bad_space_with_exit_code_2(workspace):
    config = sweep_yaml(workspace, "bad")
    out = subprocess.run([sys.executable, "-m", "ray_jobs.cli", "tune", "--config", str(config),
                          "--alpha-range", "-0.1", "0.5"], cwd=REPO, env=subprocess_env(), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith("interceptor tune: error: space.focal_alpha:")


def test_packaged_sweep_config_loads():
    from ray_jobs.sweep_config import SweepConfig, check_settings

    cfg = SweepConfig.load(REPO / "ray_jobs" / "configs" / "sweep.yaml")
    check_settings(cfg)
    assert cfg.stage and cfg.num_samples >= 1


# ----------------------------------------------------------------------------------- per-specialist search, no Ray

def _fake_trial(trial_id: str, specialist: str):
    from types import SimpleNamespace

    return SimpleNamespace(trial_id=trial_id, config={"specialist": specialist},
                           storage=SimpleNamespace(trial_dir_name=""))  # a new trial: nothing to replay


@pytest.mark.parametrize("search", ["random", "optuna"])
def test_specialists_take_turns_each_with_its_own_searcher(tmp_path, search):
    from ray import tune
    from ray.tune.search import Searcher

    def searcher():
        if search == "random":
            return RandomSearch(points=[{"lr": 1e-3}], seed=0)
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(points_to_evaluate=[{"lr": 1e-3}], seed=0)

    space = {"lr": tune.loguniform(1e-4, 1e-2)}
    combined = SpecialistSearch({KEY: searcher(), OTHER: searcher()}, num_samples=3)
    assert combined.set_search_properties("val_auc", "max", space)
    got = [combined.suggest(f"t{i}") for i in range(4)]
    assert [g["specialist"] for g in got] == [KEY, OTHER, KEY, OTHER]
    assert got[0]["lr"] == got[1]["lr"] == 1e-3  # each specialist's recipe point first
    assert all(1e-4 <= g["lr"] <= 1e-2 for g in got[2:])
    combined.on_trial_complete("t0", {"val_auc": 0.9, "training_iteration": 1})
    combined.save(str(tmp_path / "search.pkl"))  # what Tune keeps with the experiment
    restored = SpecialistSearch({KEY: searcher(), OTHER: searcher()}, num_samples=3)
    restored.set_search_properties("val_auc", "max", space)
    restored.restore(str(tmp_path / "search.pkl"))
    assert [restored.suggest(f"t{i}")["specialist"] for i in (4, 5)] == [KEY, OTHER]
    assert restored.suggest("t6") == Searcher.FINISHED  # 3 per specialist


def test_asha_compares_a_trial_only_with_its_own_specialist_s():
    from ray.tune.schedulers import TrialScheduler

    asha = SpecialistASHA([KEY, OTHER], time_attr="epoch", max_t=3, grace_period=1, reduction_factor=2,
                          stop_last_trials=False)
    assert asha.set_search_properties("val_auc", "max")
    good, low_a, low_b = _fake_trial("a", KEY), _fake_trial("b", OTHER), _fake_trial("c", OTHER)
    for trial in (good, low_a, low_b):
        asha.on_trial_add(None, trial)
    assert asha.on_trial_result(None, good, {"epoch": 1, "val_auc": 0.99}) == TrialScheduler.CONTINUE
    # OTHER's AUCs are lower: its first trial is not held to KEY's rung, its second is to its first's
    assert asha.on_trial_result(None, low_a, {"epoch": 1, "val_auc": 0.70}) == TrialScheduler.CONTINUE
    assert asha.on_trial_result(None, low_b, {"epoch": 1, "val_auc": 0.60}) == TrialScheduler.STOP
