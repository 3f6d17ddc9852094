import json

import pytest
import torch

from ray_jobs.checkpoints import (
    CHECKPOINT_FILE,
    META_FILE,
    CheckpointError,
    build_payload,
    checkpoint_recipe,
    init_from,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from ray_jobs.config import ConfigError, StageChain, apply_overrides
from ray_jobs.runner import SpecialistRunner
from specialists import create_model
from tests.helpers import TINY


@pytest.fixture()
def saved(tmp_path):
    recipe = StageChain.load().get("ffpp")
    model = create_model("rr", **TINY)
    runner = SpecialistRunner(model, recipe, log_every=0)
    runner.epoch = 2
    path = save_checkpoint(tmp_path / "rr-ffpp", build_payload(runner.state_dict(), model.config, recipe,
                                                               {"val_auc": 0.75}))
    return path, model


def test_checkpoint_describes_itself_and_loads_weights_only(saved):
    path, model = saved
    raw = torch.load(path / CHECKPOINT_FILE, weights_only=True)
    assert raw["specialist"] == "rr" and raw["stage"] == "ffpp" and raw["epoch"] == 2
    assert raw["model_config"]["backbone"] == "test_efficientnet"
    assert raw["recipe"]["lr"] == 1e-4 and raw["recipe"]["loss"] == "cross_entropy"
    assert {"torch", "timm", "python"} <= set(raw["versions"])
    assert raw["metrics"]["val_auc"] == 0.75
    assert {"optimizer", "scheduler", "model"} <= set(raw)
    meta = json.loads((path / META_FILE).read_text())
    assert meta["spec"]["key"] == "rr" and meta["stage"] == "ffpp" and "model" not in meta
    assert not list(path.glob("*.tmp"))


def test_model_rebuilds_from_its_own_config_alone(saved):
    path, model = saved
    rebuilt = model_from_checkpoint(path).eval()
    x, grid = torch.rand(2, 4, 3, 32, 32), torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(rebuilt(x, grid=grid), model.eval()(x, grid=grid))
    assert checkpoint_recipe(load_checkpoint(path)).name == "ffpp"


def test_mismatched_specialist_or_backbone_is_named(saved):
    path, _ = saved
    payload = load_checkpoint(path)
    with pytest.raises(CheckpointError, match=r"specialist 'rr' checkpoint but the model is specialist 'cm'"):
        init_from(create_model("cm", **TINY), payload)
    payload["model_config"] = {**payload["model_config"], "backbone": "efficientnet_b4"}
    with pytest.raises(CheckpointError, match=r"backbone 'efficientnet_b4' checkpoint but the model is backbone "
                                              r"'test_efficientnet'"):
        init_from(create_model("rr", **TINY), payload)


def test_truncated_and_missing_files_give_one_line(saved, tmp_path):
    path, _ = saved
    data = (path / CHECKPOINT_FILE).read_bytes()
    bad = tmp_path / "bad.pt"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt") as e:
        load_checkpoint(bad)
    assert "\n" not in str(e.value)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope")
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not an Interceptor"):
        load_checkpoint(foreign)


def test_stage_recipes_are_the_seed_numbers_and_round_trip(tmp_path):
    chain = StageChain.load()
    assert chain.names == ["ffpp", "celebdf", "dfdc"]
    ffpp, celebdf, dfdc = chain.stages
    assert (ffpp.lr, ffpp.epochs, ffpp.loss.value, ffpp.dropout) == (1e-4, 6, "cross_entropy", 0.3)
    assert (ffpp.augmentation.rotation, ffpp.augmentation.brightness) == (5, 0.1)
    assert (celebdf.lr, celebdf.epochs, celebdf.loss.value, celebdf.focal_alpha, celebdf.focal_gamma) == \
        (5e-5, 5, "focal", 0.25, 2.0)
    assert (celebdf.augmentation.translate, celebdf.preprocessing.value, celebdf.init_from) == (0.05, "clahe", "ffpp")
    assert (dfdc.lr, dfdc.epochs, dfdc.chunks, dfdc.loss.value, dfdc.dropout) == (1e-5, 2, 10, "weighted_focal", 0.4)
    assert (dfdc.augmentation.perspective, dfdc.preprocessing.value) == (0.2, "clahe_bilateral")
    assert chain.get("stage1") is ffpp and chain.get("stage2") is celebdf and chain.get("stage4") is dfdc
    chain.save(tmp_path / "stages.yaml")
    assert StageChain.load(tmp_path / "stages.yaml") == chain
    assert apply_overrides(dfdc, ["chunks=2", "augmentation.rotation=3"]).chunks == 2


def test_unknown_stage_fails_with_one_line():
    with pytest.raises(ConfigError, match=r"unknown stage 'stage3'; known: ffpp \(stage1\), celebdf \(stage2\)"):
        StageChain.load().get("stage3")


@pytest.mark.parametrize(("fields", "error"), [
    ("lr: 0, epochs: 1, loss: focal, dropout: 0.1", "lr must be > 0"),
    ("lr: 1, epochs: 1, loss: focal, dropout: 0.1, warmup_steps: -5", "stage a: warmup_steps must be >= 0, got -5"),
    ("lr: 1, epochs: 1, loss: hinge, dropout: 0.1", "'hinge' is not one of"),
    ("lr: 1, epochs: 1, loss: focal, dropout: 0.1, lr_x: 2", "unknown field"),
])
def test_bad_stage_configs_fail_with_one_line(tmp_path, fields, error):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"stages:\n  - {{name: a, dataset: ffpp, {fields}}}\n")
    with pytest.raises(ConfigError, match=error) as e:
        StageChain.load(bad)
    assert "\n" not in str(e.value)


def test_checkpoint_policy_keeps_best_chunk_ends_and_last_epoch():
    from ray_jobs.worker import checkpoint_due

    aucs = [0.6, 0.7, 0.65, 0.7, 0.8, 0.75]  # 2 chunks x 3 epochs
    history = [{"epoch": i + 1, "val_auc": a} for i, a in enumerate(aucs)]

    def due(every):
        return [e for e in range(1, 7) if checkpoint_due(history[:e], chunk_done=e % 3 == 0, total_epochs=6,
                                                         every=every)]

    # improvements (1, 2, 5; a tie is not one), chunk ends (3, 6) and the last epoch (6)
    assert due(0) == [1, 2, 3, 5, 6]
    assert due(1) == [1, 2, 3, 4, 5, 6]
    assert due(4) == [1, 2, 3, 4, 5, 6] and due(5) == [1, 2, 3, 5, 6]
