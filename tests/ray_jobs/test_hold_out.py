"""Leave-one-family-out (``hold_out``) and pseudo-fakes in a training run.

Planning needs no Ray: label counts and families without the held-out fakes, the jobs' records,
the one-line refusal when holding a family out leaves a class empty, and which of a worker's
streams makes pseudo-fakes. One run on a real Ray
trains a stage with pseudo-fakes and a family held out, end to end. The shards hold two fake
families (``checker`` and ``bright``, :func:`tests.ray_jobs.test_evaluate.write_split`).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from data_pipeline.pseudo_fakes import CROP_MARGIN, PseudoFakes
from data_pipeline.shards import list_complete_shards
from ray_jobs.config import ConfigError, TrainConfig, from_dict
from ray_jobs.plan import _count_labels, hold_out_filter, plan
from tests.conftest import REPO, subprocess_env
from tests.helpers import write_learnable_shards
from tests.ray_jobs.test_evaluate import write_split
from tests.ray_jobs.test_train_ray import final_dir, start_train

MODEL = {"backbone": "test_efficientnet", "embed_dim": 32, "num_heads": 2, "allow_random_init": True}


def two_family_shards(folder: Path, dataset: str = "ffpp", preprocessing: str = "resize", train_videos: int = 48,
                      val_videos: int = 16, test_videos: int = 8) -> Path:
    """Train/val/test shards whose videos go real, checker, real, bright, ... (two clips each)."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, n, seed in (("train", train_videos, 1), ("val", val_videos, 2), ("test", test_videos, 3)):
        write_split(folder, split, n, seed=seed, preprocessing=preprocessing, dataset=dataset)
    return folder


def run_config(tmp_path: Path, shards: dict[str, Path], **extra) -> TrainConfig:
    return from_dict(TrainConfig, {"shards": {k: str(v) for k, v in shards.items()}, "model": MODEL,
                                   "storage_path": str(tmp_path / "runs"), "name": "held", "specialists": ["cm"], **extra})


def test_count_labels_leaves_the_held_out_fakes_out(tmp_path):
    files = [str(p) for p in list_complete_shards(two_family_shards(tmp_path / "ffpp"), split="train")]
    table = pq.read_table(files, columns=["label", "method"]).to_pylist()
    assert sum(r["method"] == "bright" for r in table) == sum(r["method"] == "checker" for r in table) == 24

    both = {"checker", "bright"}
    assert _count_labels(files) == ({0: 48, 1: 48}, {"resize"}, both, both)
    assert _count_labels(files, hold_out=["bright"]) == ({0: 48, 1: 24}, {"resize"}, {"checker"}, both)
    assert _count_labels(files, hold_out=["checker"]) == ({0: 48, 1: 24}, {"resize"}, {"bright"}, both)
    assert _count_labels(files, hold_out=["checker", "bright"]) == ({0: 48, 1: 0}, {"resize"}, set(), both)
    assert _count_labels(files, hold_out=["real"]) == ({0: 48, 1: 48}, {"resize"}, both, both)  # reals stay
    assert _count_labels(files, hold_out=[]) == _count_labels(files, hold_out=["no_such_family"])


def test_a_hold_out_family_no_shard_holds_is_refused_in_one_line(tmp_path):
    cfg = run_config(tmp_path, {"ffpp": two_family_shards(tmp_path / "ffpp")}, stages=["ffpp"], hold_out=["brigth"])
    with pytest.raises(ConfigError) as err:
        plan(cfg)
    assert str(err.value) == ("hold_out: no training fake of brigth in the shards of stage(s) ffpp; "
                              "their families: bright, checker")


def test_hold_out_filter_keeps_reals_and_the_other_families():
    assert hold_out_filter([]) is None
    rows = pa.table({"label": [0, 1, 1, 0, 1], "method": ["real", "bright", "checker", "bright", "other"]})
    kept = rows.filter(hold_out_filter(["bright"])).to_pylist()
    assert kept == [{"label": 0, "method": "real"}, {"label": 1, "method": "checker"},
                    {"label": 0, "method": "bright"}, {"label": 1, "method": "other"}]


def test_plan_gives_jobs_the_hold_out_and_the_families_trained_through_the_chain(tmp_path):
    ffpp = two_family_shards(tmp_path / "ffpp")
    celebdf = write_learnable_shards(tmp_path / "celebdf", dataset="celebdf", n_train=16, n_val=8, n_test=8,
                                     preprocessing="clahe")  # checker fakes only
    _, planned = plan(run_config(tmp_path, {"ffpp": ffpp}, stages=["ffpp"], hold_out=["bright"]))
    (stage, jobs, _), = planned
    assert stage.name == "ffpp" and len(jobs) == 1
    assert jobs[0].hold_out == ["bright"] and jobs[0].trained_methods == ["checker"]
    assert jobs[0].class_counts == [{0: 48, 1: 24}]

    # celebdf initialises from ffpp: its checkpoints record ffpp's families too
    _, planned = plan(run_config(tmp_path, {"ffpp": ffpp, "celebdf": celebdf}, stages=["ffpp", "celebdf"]))
    assert [(s.name, j[0].trained_methods, j[0].hold_out) for s, j, _ in planned] == [
        ("ffpp", ["bright", "checker"], []), ("celebdf", ["bright", "checker"], [])]
    _, planned = plan(run_config(tmp_path, {"ffpp": ffpp, "celebdf": celebdf}, stages=["ffpp", "celebdf"],
                                 hold_out=["bright"]))
    assert [j[0].trained_methods for _, j, _ in planned] == [["checker"], ["checker"]]


@pytest.mark.parametrize("recorded, expected", [(["bright", "face_swap"], ["bright", "checker", "face_swap"]),
                                                (None, None)])
def test_a_stage_started_from_a_checkpoint_inherits_the_families_it_records(tmp_path, recorded, expected):
    """A stage whose predecessor is not trained in this run takes the predecessor's families from
    that checkpoint's record, not from whatever shards the run names; a checkpoint from before
    the records gives ``None`` (nothing known: evaluate marks nothing)."""
    celebdf = write_learnable_shards(tmp_path / "celebdf", dataset="celebdf", n_train=16, n_val=8, n_test=8,
                                     preprocessing="clahe")  # checker fakes only
    start = tmp_path / "ffpp-checkpoint"
    start.mkdir()
    extra = {} if recorded is None else {"trained_methods": recorded, "hold_out": []}
    (start / "meta.json").write_text(json.dumps({"extra": extra}))
    _, planned = plan(run_config(tmp_path, {"celebdf": celebdf}, stages=["celebdf"],
                                 init_checkpoints={"celebdf": str(start)}))
    assert planned[0][1][0].trained_methods == expected


def test_holding_out_the_only_fake_family_is_refused_in_one_line(tmp_path):
    shards = write_learnable_shards(tmp_path / "ffpp", n_train=16, n_val=8, n_test=8, size=16)  # checker fakes only
    cfg = run_config(tmp_path, {"ffpp": shards}, stages=["ffpp"], hold_out=["checker"])
    with pytest.raises(ConfigError) as err:
        plan(cfg)
    text = str(err.value)
    assert "\n" not in text, text
    assert text == "stage ffpp: training chunk 0 lacks a class once checker is held out (label counts {0: 8, 1: 0})"
    assert not (tmp_path / "runs" / "held" / "cm-ffpp").exists()


def test_the_workers_training_stream_makes_the_recipes_pseudo_fakes_and_validation_none(tmp_path, monkeypatch):
    """``WorkerBatches``: the training stream's collate function gets the stage's pseudo-fakes, the
    validation stream's none (Ray Train's dataset shard stubbed: no Ray started)."""
    import types

    import ray.train

    from ray_jobs.worker import WorkerBatches
    from specialists.registry import get_spec

    cfg = run_config(tmp_path, {"ffpp": two_family_shards(tmp_path / "ffpp", train_videos=8, val_videos=4)},
                     stages=["ffpp"], hold_out=["bright"],
                     stage_overrides={"ffpp": {"pseudo_fakes": {"method": "sbi", "ratio": 0.5}}})
    job = plan(cfg)[1][0][1][0]
    assert job.recipe.pseudo_fakes == PseudoFakes(method="sbi", ratio=0.5)
    streams = {}

    class Shard:
        def __init__(self, name):
            self.name = name

        def iter_torch_batches(self, **kwargs):
            streams[self.name] = kwargs
            return []

    monkeypatch.setattr(ray.train, "get_dataset_shard", Shard)
    runner = types.SimpleNamespace(epoch=0, chunk_of=lambda epoch: 0, log=lambda *a: None,
                                   core=types.SimpleNamespace(spec=get_spec(job.specialist)))
    batches = WorkerBatches(runner, job, cfg, "cpu", rank=0)
    batches.train(0)
    batches.val()
    assert streams["train_0"]["collate_fn"].pseudo_fakes == PseudoFakes(method="sbi", ratio=0.5)
    assert streams["train_0"]["collate_fn"].rates is not None  # balanced first, then pseudo-fakes
    assert streams["val"]["collate_fn"].pseudo_fakes is None


COUNT_SCRIPT = """
import json, sys
from ray_jobs.cluster import init_ray
from ray_jobs.config import TrainConfig
from ray_jobs.datasets import build_datasets
from ray_jobs.plan import plan
cfg = TrainConfig.load(sys.argv[1])
job = plan(cfg, skip_complete=False)[1][0][1][0]
init_ray(sys.argv[2])
labels = {name: [r["label"] for r in ds.select_columns(["label"]).take_all()] for name, ds in build_datasets(job, cfg).items()}
out = {name: [len(v), sum(v)] for name, v in labels.items()}
print("COUNTS " + json.dumps(out))
"""


@pytest.mark.ray
def test_a_stage_with_pseudo_fakes_and_a_held_out_family_trains_end_to_end_on_ray(ray_head, tmp_path):
    """cm trains one epoch of ffpp with half of each batch's fakes replaced by self-blended
    pseudo-fakes, ``bright`` held out: the run completes, its checkpoint records the recipe's
    pseudo-fakes, the held-out family and the families trained on, and the streams its workers
    read hold no ``bright`` fake."""
    shards = two_family_shards(tmp_path / "shards" / "ffpp", train_videos=32, val_videos=16, test_videos=8)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "shards": {"ffpp": str(shards)}, "storage_path": str(tmp_path / "runs"), "name": "sbi",
        "specialists": ["cm"], "stages": ["ffpp"], "hold_out": ["bright"],
        "stage_overrides": {"ffpp": {"epochs": 1, "lr": 3.0e-3, "pseudo_fakes": {"method": "sbi", "ratio": 0.5}}},
        "model": MODEL, "batch_size": 16, "cpus_per_worker": 0.5, "log_every": 0, "score_test": False}))
    log = tmp_path / "train.log"
    proc = start_train(config, ray_head["gcs"], log)
    assert proc.wait(timeout=600) == 0, log.read_text()[-4000:]

    final = final_dir(tmp_path, "sbi", "cm", "ffpp")
    assert (final / "COMPLETE.json").is_file() and (final / "checkpoint.pt").is_file()
    meta = json.loads((final / "meta.json").read_text())
    assert meta["stage"] == "ffpp" and meta["stage_complete"]
    assert meta["recipe"]["pseudo_fakes"] == {"method": "sbi", "ratio": 0.5, "margin": CROP_MARGIN}
    assert meta["extra"]["hold_out"] == ["bright"]
    assert meta["extra"]["trained_methods"] == ["checker"] and "bright" not in meta["extra"]["trained_methods"]
    report = json.loads((final / "COMPLETE.json").read_text())
    assert report["recipe"]["pseudo_fakes"]["ratio"] == 0.5 and 0.0 <= report["val_auc"] <= 1.0

    # what the workers streamed: 32 real clips and 16 checker fakes to train on (16 bright left
    # out), and the validation split without its 8 bright fakes
    out = subprocess.run([sys.executable, "-c", COUNT_SCRIPT, str(config), ray_head["gcs"]], cwd=REPO,
                         env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    counts = json.loads(next(line for line in out.stdout.splitlines() if line.startswith("COUNTS "))[7:])
    assert counts == {"train_0": [48, 16], "val": [24, 8]}
