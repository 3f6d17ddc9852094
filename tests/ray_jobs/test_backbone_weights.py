"""Backbone weights in a run: ``weights_file: s3://...`` fetched by the training worker, the driver's
checks before any worker starts (random-init refusal, weights file, pretrained cache), and
checkpoints that never ask for backbone weights again. No Ray is started."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from ray_jobs.checkpoints import build_payload
from ray_jobs.config import ConfigError, StageChain, TrainConfig
from ray_jobs.plan import Job, check_backbone_weights
from ray_jobs.storage import Storage
from ray_jobs.worker import build_model
from specialists.model import ModelConfig
from specialists.registry import SpecialistError
from tests.conftest import REPO, subprocess_env
from tests.helpers import write_learnable_shards

BACKBONE = "test_efficientnet"
MODEL = dict(backbone=BACKBONE, embed_dim=32, num_heads=2, image_size=32)


def random_backbone_state(seed: int) -> dict[str, torch.Tensor]:
    import timm

    torch.manual_seed(seed)
    return {k: (torch.randn_like(v) if v.is_floating_point() else v).contiguous()
            for k, v in timm.create_model(BACKBONE, num_classes=0).state_dict().items()}


def job(stage: str = "ffpp", init_parts: list[str] | None = None, **model) -> Job:
    recipe = StageChain.load().get(stage)
    return Job("cm", recipe, ModelConfig(specialist="cm", **{**MODEL, **model}), [[]], [], [], [{0: 1, 1: 1}],
               init_parts)


@pytest.fixture
def s3(s3_server, monkeypatch) -> dict:
    for k, v in s3_server["env"].items():
        monkeypatch.setenv(k, v)
    return s3_server


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_s3_weights_file_is_what_the_backbone_starts_from(s3, tmp_path, suffix):
    from safetensors.torch import save_file

    state = random_backbone_state(seed=3)
    local = tmp_path / f"backbone{suffix}"
    torch.save(state, local) if suffix == ".pth" else save_file(state, str(local))
    key = f"weights/{BACKBONE}{suffix}"
    s3["client"].upload_file(str(local), s3["bucket"], key)
    uri = f"s3://{s3['bucket']}/{key}"
    storage = Storage(f"s3://{s3['bucket']}/runs", s3["endpoint"])

    model = build_model(job(weights_file=uri), storage, restored=None)
    got = model.backbone.state_dict()
    assert set(got) == set(state) and all(torch.equal(got[k], state[k]) for k in state)

    # the driver's check finds it, and refuses a key that is not there, in one line
    cfg = TrainConfig(shards={}, storage_path=storage.uri, s3_endpoint=s3["endpoint"],
                      model=ModelConfig(**MODEL, weights_file=uri))
    check_backbone_weights(cfg, [job(weights_file=uri)])
    missing = f"s3://{s3['bucket']}/weights/nothing.pth"
    with pytest.raises(ConfigError, match=rf"^model.weights_file not found: {missing}$"):
        check_backbone_weights(dataclasses.replace(cfg, model=ModelConfig(**MODEL, weights_file=missing)),
                               [job(weights_file=missing)])
    with pytest.raises(SpecialistError, match=rf"^backbone weights {missing}: cannot be read"):
        build_model(job(weights_file=missing), storage, restored=None)


def test_stages_that_get_their_weights_elsewhere_read_no_backbone_weights(tmp_path):
    """A stage initialised from its predecessor, or a restarted one, never fetches ``weights_file``
    nor asks for ``pretrained`` weights: the checkpoint's weights replace them anyway."""
    gone = "s3://no-such-bucket/none.pth"
    model = build_model(job("celebdf", weights_file=gone, pretrained=True), Storage(str(tmp_path)), restored=None)
    assert model.config.weights_file is None and not model.config.pretrained
    model = build_model(job(weights_file=gone, pretrained=True), Storage(str(tmp_path)), restored=object())
    assert model.config.weights_file is None and not model.config.pretrained


def test_checkpoints_never_ask_for_backbone_weights(tmp_path):
    config = ModelConfig(specialist="cm", **MODEL, pretrained=True, weights_file="s3://bucket/w.pth")
    state = {"epoch": 1, "steps": 4, "model": {}, "optimizer": {}, "scheduler": {}, "scaler": None}
    stored = build_payload(state, config, StageChain.load().get("ffpp"))["model_config"]
    assert stored["pretrained"] is False and stored["weights_file"] is None and stored["backbone"] == BACKBONE


def test_random_init_refusal_and_what_lifts_it(tmp_path):
    cfg = TrainConfig(shards={}, storage_path=str(tmp_path), model=ModelConfig(**MODEL))
    first, later = job(), job("celebdf", init_parts=["run", "final", "cm-ffpp"])
    with pytest.raises(ConfigError) as err:
        check_backbone_weights(cfg, [later, first])
    text = str(err.value)
    assert "\n" not in text and text.startswith("stage ffpp: cm would fine-tune (lr 0.0001) from random backbone")
    for hint in ("model.pretrained: true", "model.weights_file: PATH|s3://bucket/key", "model.allow_random_init: true"):
        assert hint in text
    check_backbone_weights(dataclasses.replace(cfg, model=ModelConfig(**MODEL, allow_random_init=True)), [first])
    check_backbone_weights(cfg, [later])  # initialised from its predecessor
    check_backbone_weights(cfg, [dataclasses.replace(first, recipe=first.recipe.replace(lr=3e-3))])  # from scratch


def train_cli(tmp_path: Path, model: dict, **env: str) -> list[str]:
    shards = write_learnable_shards(tmp_path / "shards" / "ffpp", n_train=16, n_val=8, n_test=8)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"shards": {"ffpp": str(shards)}, "storage_path": str(tmp_path / "runs"),
                                      "name": "w", "specialists": ["cm"], "stages": ["ffpp"],
                                      "model": {**MODEL, **model}}))
    out = subprocess.run([sys.executable, "-m", "ray_jobs.train", "--config", str(config)], cwd=REPO,
                         env=subprocess_env(**env), capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr[-3000:]
    assert "ray" not in out.stdout.lower()
    return [line for line in out.stderr.splitlines() if line.strip()]


def test_train_refuses_random_init_in_one_line(tmp_path):
    lines = train_cli(tmp_path, {})
    assert len(lines) == 1 and lines[0].startswith("interceptor train: error: stage ffpp: cm would fine-tune"), lines
    assert "model.allow_random_init: true" in lines[0]


def test_train_offline_with_an_empty_hub_cache_fails_in_one_line(tmp_path):
    home = tmp_path / "hf"
    lines = train_cli(tmp_path, {"pretrained": True}, HF_HOME=str(home), HF_HUB_OFFLINE="1")
    assert len(lines) == 1 and lines[0].startswith("interceptor train: error: backbone test_efficientnet:"), lines
    assert f"Hugging Face cache {home / 'hub'}" in lines[0] and "model.weights_file" in lines[0]
