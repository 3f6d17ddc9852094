"""The training core in a plain process: two chained stages learn; resume == uninterrupted."""

import pytest
import torch

from ray_jobs.checkpoints import build_payload, init_from, load_checkpoint, resume, save_checkpoint
from ray_jobs.config import StageChain
from ray_jobs.runner import SpecialistRunner
from specialists import create_model
from tests.helpers import TINY, batches, learnable_clips

TRAIN = learnable_clips(96, seed=1)
VAL = learnable_clips(48, seed=2)


def _recipes():
    chain = StageChain.load()
    # the packaged recipes, shortened and with a learning rate that learns in seconds
    return chain.get("stage1").replace(lr=3e-3, epochs=4), chain.get("stage2").replace(lr=1e-3, epochs=2)


def _fit(runner, on_epoch_end=None, stop_after=None):
    def train(epoch):
        return batches(TRAIN, 16, seed=epoch)

    def val():
        return batches(VAL, 32)

    return runner.fit(train, val, on_epoch_end, stop_at=stop_after)


def test_two_chained_stages_learn_and_second_starts_from_first(tmp_path):
    ffpp, celebdf = _recipes()
    torch.manual_seed(0)
    model = create_model("cm", **TINY)
    runner = SpecialistRunner(model, ffpp, seed=0, log_every=0)
    m1 = _fit(runner)
    assert m1["val_auc"] > 0.9, m1
    save_checkpoint(tmp_path / "ffpp", build_payload(runner.state_dict(), model.config, ffpp, m1))
    runner.close()

    payload = load_checkpoint(tmp_path / "ffpp")
    model2 = create_model("cm", **TINY)
    init_from(model2, payload)
    for name, tensor in model2.state_dict().items():
        assert torch.equal(tensor, payload["model"][name]), name
    runner2 = SpecialistRunner(model2, celebdf, seed=0, log_every=0)
    assert runner2.epoch == 0 and model2.config.dropout == celebdf.dropout
    start = runner2.validate(batches(VAL, 32))
    assert start["val_auc"] > 0.9  # it starts where stage one ended, not from scratch
    m2 = _fit(runner2)
    assert m2["val_auc"] > 0.9 and m2["epoch"] == celebdf.total_epochs


@pytest.mark.parametrize("warmup_steps", [0, 9], ids=["no-warmup", "warmup-across-the-restart"])
def test_resume_after_epoch_k_matches_uninterrupted_run(tmp_path, warmup_steps):
    ffpp, _ = _recipes()
    ffpp = ffpp.replace(epochs=3, warmup_steps=warmup_steps)  # 6 steps an epoch: 9 outlast epoch 1

    torch.manual_seed(0)
    straight = SpecialistRunner(create_model("tm", **TINY), ffpp, seed=7, log_every=0)
    _fit(straight)

    torch.manual_seed(0)
    model = create_model("tm", **TINY)
    first = SpecialistRunner(model, ffpp, seed=7, log_every=0)
    _fit(first, stop_after=1)
    first_steps = first.steps
    save_checkpoint(tmp_path / "crash", build_payload(first.state_dict(), model.config, ffpp))
    del first

    torch.manual_seed(123)  # a fresh process: different init, restored by resume
    again = SpecialistRunner(create_model("tm", **TINY), ffpp, seed=7, log_every=0)
    resume(again, load_checkpoint(tmp_path / "crash"))
    assert again.epoch == 1 and again.steps == first_steps
    _fit(again)
    assert again.epoch == straight.epoch == 3
    for (name, a), b in zip(straight.core.state_dict().items(), again.core.state_dict().values()):
        assert torch.equal(a, b), f"{name} differs after resume"


def test_warmup_raises_the_learning_rate_linearly_then_leaves_the_schedule():
    ffpp, _ = _recipes()
    recipe = ffpp.replace(epochs=2, warmup_steps=4)
    torch.manual_seed(0)
    runner = SpecialistRunner(create_model("cm", **TINY), recipe, seed=0, log_every=0)
    used = []  # the learning rate of every optimiser step
    runner.optimizer.register_step_pre_hook(lambda opt, args, kwargs: used.append(opt.param_groups[0]["lr"]))
    _fit(runner)
    per_epoch = len(TRAIN["label"]) // 16
    assert len(used) == runner.steps == 2 * per_epoch
    lr = recipe.lr
    assert used[:4] == pytest.approx([lr / 4, lr / 2, 3 * lr / 4, lr])
    assert used[4:per_epoch] == pytest.approx([lr] * (per_epoch - 4))
    # epoch 2 runs at the cosine schedule's rate, untouched by the warm-up
    eta_min = 0.05 * lr
    assert used[per_epoch:] == pytest.approx([eta_min + (lr - eta_min) / 2] * per_epoch)


def test_init_from_is_weights_only(tmp_path):
    ffpp, celebdf = _recipes()
    model = create_model("bg", **TINY)
    runner = SpecialistRunner(model, ffpp, seed=0, log_every=0)
    runner.train_epoch(batches(TRAIN, 16, seed=0))
    runner.epoch = 1
    save_checkpoint(tmp_path / "c", build_payload(runner.state_dict(), model.config, ffpp))
    fresh = SpecialistRunner(create_model("bg", **TINY), celebdf, seed=0, log_every=0)
    init_from(fresh.core, load_checkpoint(tmp_path / "c"))
    assert fresh.epoch == 0 and not fresh.optimizer.state
    assert fresh.optimizer.param_groups[0]["lr"] == celebdf.lr
