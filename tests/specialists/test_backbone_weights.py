"""Backbone weights the way timm users expect: ``pretrained`` through the Hugging Face hub cache,
offline included, and one-line errors when the weights cannot be had. Nothing is downloaded: the
cache is written by the test in the hub's own layout, under a temporary ``HF_HOME``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from specialists.model import check_pretrained_available, create_backbone
from specialists.registry import SpecialistError
from tests.conftest import REPO

TINY_BACKBONE = "test_efficientnet"  # timm: hf_hub_id timm/test_efficientnet.r160_in1k, ~0.4 M parameters


def hub_repo(name: str) -> str:
    from timm.models import get_pretrained_cfg

    return get_pretrained_cfg(name).hf_hub_id


def seed_hub_cache(hf_home: Path, name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Write ``name``'s weights (random, seeded) into ``hf_home``'s hub cache as the hub lays out a
    downloaded repository: ``models--org--repo/refs/main`` -> ``snapshots/<commit>/model.safetensors``.
    Returns the state dict written."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = timm.create_model(name, num_classes=0)
    state = {k: (torch.randn_like(v) if v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = hf_home / "hub" / ("models--" + hub_repo(name).replace("/", "--"))
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    save_file(state, str(repo / "snapshots" / commit / "model.safetensors"))
    return state


@pytest.fixture
def hub_home(tmp_path, monkeypatch) -> Path:
    """An empty ``HF_HOME``, offline, for this process: huggingface_hub reads its environment once,
    at import, so its module constants are pointed at it too (a fresh process reads the env alone)."""
    from huggingface_hub import constants

    home = tmp_path / "hf"
    home.mkdir()
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return home


def test_pretrained_offline_with_an_empty_cache_fails_in_one_line(hub_home):
    for attempt in (lambda: create_backbone(TINY_BACKBONE, pretrained=True),
                    lambda: check_pretrained_available(TINY_BACKBONE)):
        with pytest.raises(SpecialistError) as err:
            attempt()
        text = str(err.value)
        assert "\n" not in text and err.value.__cause__ is None
        assert str(hub_home / "hub") in text and "HF_HUB_OFFLINE=1" in text and "model.weights_file" in text
        assert hub_repo(TINY_BACKBONE) in text


def test_pretrained_loads_timms_weights_from_a_seeded_cache_offline(hub_home):
    state = seed_hub_cache(hub_home, TINY_BACKBONE)
    check_pretrained_available(TINY_BACKBONE)
    loaded = create_backbone(TINY_BACKBONE, pretrained=True).state_dict()
    assert set(loaded) == set(state)
    assert all(torch.equal(loaded[k], state[k]) for k in state)


def test_weights_file_wins_over_pretrained_and_s3_is_the_workers_job(tmp_path, hub_home):
    import timm

    torch.manual_seed(1)
    state = {k: torch.randn_like(v) if v.is_floating_point() else v
             for k, v in timm.create_model(TINY_BACKBONE, num_classes=0).state_dict().items()}
    torch.save(state, tmp_path / "w.pth")
    loaded = create_backbone(TINY_BACKBONE, str(tmp_path / "w.pth"), pretrained=True).state_dict()  # empty cache: unused
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    with pytest.raises(SpecialistError, match=r"s3:// files are fetched by the training worker"):
        create_backbone(TINY_BACKBONE, "s3://bucket/w.pth")


def test_a_fresh_process_honours_hf_home_and_hf_hub_offline(tmp_path):
    """The real mechanism, no patching: a new process with ``HF_HOME`` and ``HF_HUB_OFFLINE=1`` in its
    environment loads the seeded weights through ``SpecialistModel``, and names that cache when empty."""
    home, empty = tmp_path / "hf", tmp_path / "empty"
    home.mkdir()
    empty.mkdir()
    state = seed_hub_cache(home, TINY_BACKBONE, seed=2)
    torch.save(state, tmp_path / "expected.pt")
    code = (
        "import json, sys, torch\n"
        "from specialists.model import ModelConfig, SpecialistModel\n"
        "from specialists.registry import SpecialistError\n"
        "try:\n"
        f"    m = SpecialistModel(ModelConfig(specialist='cm', backbone={TINY_BACKBONE!r}, pretrained=True))\n"
        "except SpecialistError as e:\n"
        "    print(json.dumps({'error': str(e)})); sys.exit(0)\n"
        f"want = torch.load({str(tmp_path / 'expected.pt')!r})\n"
        "got = m.backbone.state_dict()\n"
        "print(json.dumps({'equal': set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)}))\n"
    )
    results = {}
    for label, hf_home in (("seeded", home), ("empty", empty)):
        env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
        env.pop("HF_HUB_CACHE", None)
        out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                             timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        results[label] = json.loads(out.stdout.strip().splitlines()[-1])
    assert results["seeded"] == {"equal": True}
    error = results["empty"]["error"]
    assert str(empty / "hub") in error and "HF_HUB_OFFLINE=1" in error and "model.weights_file" in error


def test_a_backbone_without_pretrained_weights_is_refused():
    import timm
    from timm.models import get_pretrained_cfg

    name = next((n for n in timm.list_models() if not (get_pretrained_cfg(n) and (get_pretrained_cfg(n).hf_hub_id
                                                                                    or get_pretrained_cfg(n).url))),
                None)
    if name is None:
        pytest.skip("every timm model has pretrained weights")
    with pytest.raises(SpecialistError, match=rf"timm has no pretrained weights for backbone '{name}'"):
        create_backbone(name, pretrained=True)
