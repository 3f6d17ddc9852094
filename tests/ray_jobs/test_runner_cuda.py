"""The training core on a GPU: AMP (bf16, and fp16 with a gradient scaler) learns, and what it
saves loads on a CPU-only machine. Skipped where no CUDA device is present (CI has none)."""

import pytest
import torch

from ray_jobs import runner as runner_module
from ray_jobs.checkpoints import build_payload, load_checkpoint, model_from_checkpoint, save_checkpoint
from ray_jobs.config import StageChain
from ray_jobs.runner import SpecialistRunner
from specialists import create_model
from tests.helpers import TINY, batches, learnable_clips

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

TRAIN = learnable_clips(96, seed=1)
VAL = learnable_clips(48, seed=2)


def _fit(runner):
    return runner.fit(lambda epoch: batches(TRAIN, 16, seed=epoch), lambda: batches(VAL, 32))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_amp_training_learns_and_checkpoint_loads_on_cpu(dtype, monkeypatch, tmp_path):
    if dtype is torch.bfloat16 and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    monkeypatch.setattr(runner_module, "amp_settings", lambda device: (True, dtype))
    recipe = StageChain.load().get("ffpp").replace(lr=3e-3, epochs=4)
    torch.manual_seed(0)
    model = create_model("tm", **TINY).cuda()
    runner = SpecialistRunner(model, recipe, device="cuda", seed=0, log_every=0)
    assert runner.amp and runner.amp_dtype is dtype
    assert runner.scaler.is_enabled() == (dtype is torch.float16)
    metrics = _fit(runner)
    assert metrics["val_auc"] > 0.9, metrics
    assert all(torch.isfinite(p).all() for p in model.parameters())
    probs_gpu, _ = runner.predict(batches(VAL, 32))
    save_checkpoint(tmp_path, build_payload(runner.state_dict(), model.config, recipe, metrics))
    runner.close()

    cpu_model = model_from_checkpoint(load_checkpoint(tmp_path, map_location="cpu")).eval()
    assert all(p.device.type == "cpu" for p in cpu_model.parameters())
    with torch.no_grad():
        probs_cpu = torch.cat([torch.softmax(cpu_model(b["frames"]), 1)[:, 1] for b in batches(VAL, 32)])
    # the GPU pass ran under autocast, the CPU one in float32
    assert torch.allclose(probs_cpu, probs_gpu.float().cpu(), atol=0.05)
