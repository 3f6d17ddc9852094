"""The training stream's last mile (``ray_jobs/collate.py``): class balancing, rows -> tensors.

No Ray cluster needed: the collate function is what Ray Data's prefetch threads call per batch.
"""

import numpy as np
import pyarrow.parquet as pq
import torch

from data_pipeline.shards import list_complete_shards
from ray_jobs.collate import ClipCollate, balance_batch, balance_rates
from tests.helpers import write_learnable_shards


def _stream(n_batches: int, batch_size: int, fake_share: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    for i in range(n_batches):
        labels = (rng.random(batch_size) < fake_share).astype(np.int64)
        yield {"label": labels, "row": np.arange(i * batch_size, (i + 1) * batch_size)}


def test_balancing_equalises_classes_and_keeps_batch_sizes():
    rates = balance_rates({0: 900, 1: 100})  # as announced by the shards' label counts
    assert rates == {0: 1000 / 1800, 1: 1000 / 200}
    inputs = list(_stream(40, 25, 0.1))
    rng = np.random.default_rng(1)
    out = [balance_batch(b, rates, rng) for b in inputs]
    # same batch sizes as the input: equally split DDP ranks take the same number of steps
    assert [len(b["label"]) for b in out] == [len(b["label"]) for b in inputs]
    labels = np.concatenate([b["label"] for b in out])
    assert abs(labels.mean() - 0.5) < 0.08, labels.mean()
    for b_in, b_out in zip(inputs, out):  # rows of a batch are drawn from that batch, with replacement
        assert set(b_out["row"]) <= set(b_in["row"])
    rows = np.concatenate([b["row"] for b in out])
    assert len(np.unique(rows[labels == 1])) < (labels == 1).sum()


def _clip_rows(tmp_path):
    folder = write_learnable_shards(tmp_path / "shards", n_train=48, n_val=8, n_test=8, size=16)
    table = pq.read_table(list_complete_shards(folder, split="train")[0])
    return {c: table.column(c).to_numpy(zero_copy_only=False) for c in table.column_names}


def test_clip_collate_balances_and_builds_training_tensors(tmp_path):
    batch = _clip_rows(tmp_path)
    batch["label"] = (np.arange(len(batch["label"])) % 6 == 0).astype(np.int64)  # 1 fake in 6
    out = ClipCollate(balance_rates({0: 5, 1: 1}), seed=(0, 3, 0))(batch)
    n = len(batch["label"])
    assert out["frames"].shape == (n, 4, 3, 16, 16) and out["frames"].dtype == torch.float32
    assert out["label"].shape == (n,) and 0.25 < out["label"].float().mean() < 0.75
    plain = ClipCollate()(batch)  # no balancing: the rows as they came
    assert torch.equal(plain["label"], torch.from_numpy(batch["label"]))


def test_clip_collate_draws_depend_on_seed_and_batch_not_on_call_order(tmp_path):
    batch = _clip_rows(tmp_path)
    batch["label"] = (np.arange(len(batch["label"])) % 6 == 0).astype(np.int64)
    rates = balance_rates({0: 5, 1: 1})
    a, b = ClipCollate(rates, seed=(0, 1, 0)), ClipCollate(rates, seed=(0, 2, 0))
    first = a(batch)["frames"]
    a({k: v[::-1] for k, v in batch.items()})  # another batch in between (another prefetch thread)
    assert torch.equal(a(batch)["frames"], first)
    assert not torch.equal(b(batch)["frames"], first)


def test_balancing_copies_each_row_floor_or_ceil_of_its_expected_count():
    labels = np.array([1] * 6 + [0] * 26, dtype=np.int64)  # a batch of 32, 6 fakes
    rates = balance_rates({0: 26, 1: 6})
    expected = np.array([rates[int(c)] for c in labels]) / sum(rates[int(c)] for c in labels) * len(labels)
    for seed in range(20):
        out = balance_batch({"label": labels, "row": np.arange(32)}, rates, np.random.default_rng(seed))
        copies = np.bincount(out["row"], minlength=32)
        assert copies.sum() == 32
        assert ((copies == np.floor(expected)) | (copies == np.ceil(expected))).all()
        assert abs(out["label"].mean() - 0.5) <= 1 / 32 + 1e-9


def test_uint8_frames_become_the_same_floats_on_the_runners_device(tmp_path):
    from ray_jobs.config import StageChain
    from ray_jobs.runner import SpecialistRunner
    from specialists import create_model
    from tests.helpers import TINY

    batch = _clip_rows(tmp_path)
    as_float = ClipCollate()(batch)
    as_uint8 = ClipCollate(uint8_frames=True)(batch)  # what the training stream ships by default
    assert as_uint8["frames"].dtype == torch.uint8 and as_uint8["frames"].shape == as_float["frames"].shape
    runner = SpecialistRunner(create_model("cm", **TINY), StageChain.load().get("stage1"), log_every=0)
    moved = runner._to_device(as_uint8)
    assert moved["frames"].dtype == torch.float32
    assert torch.equal(moved["frames"], as_float["frames"])
    # float batches pass through as they are
    assert torch.equal(runner._to_device(as_float)["frames"], as_float["frames"])
    runner.model.eval()
    with torch.no_grad():  # and the model sees the same input either way
        assert torch.equal(runner.forward(moved), runner.forward(runner._to_device(as_float)))
