"""Class balancing on the training stream (in the worker, no Ray needed)."""

import numpy as np

from ray_jobs.train import balance_rates, balanced_stream


def _stream(n_batches: int, batch_size: int, fake_share: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    for i in range(n_batches):
        labels = (rng.random(batch_size) < fake_share).astype(np.int64)
        yield {"label": labels, "row": np.arange(i * batch_size, (i + 1) * batch_size)}


def test_balanced_stream_equalises_classes_and_keeps_batch_sizes():
    rates = balance_rates({0: 900, 1: 100})  # as announced by the shards' label counts
    assert rates == {0: 1000 / 1800, 1: 1000 / 200}
    inputs = list(_stream(40, 25, 0.1))
    out = list(balanced_stream(iter(inputs), rates, np.random.default_rng(1)))
    # same batch sizes as the input: equally split DDP ranks take the same number of steps
    assert [len(b["label"]) for b in out] == [len(b["label"]) for b in inputs]
    labels = np.concatenate([b["label"] for b in out])
    assert abs(labels.mean() - 0.5) < 0.08, labels.mean()
    for b_in, b_out in zip(inputs, out):  # rows of a batch are drawn from that batch, with replacement
        assert set(b_out["row"]) <= set(b_in["row"])
    rows = np.concatenate([b["row"] for b in out])
    assert len(np.unique(rows[labels == 1])) < (labels == 1).sum()


def test_balanced_stream_is_reproducible_by_seed():
    rates = balance_rates({0: 3, 1: 1})
    a = list(balanced_stream(_stream(5, 16, 0.25), rates, np.random.default_rng([0, 2, 0])))
    b = list(balanced_stream(_stream(5, 16, 0.25), rates, np.random.default_rng([0, 2, 0])))
    assert len(a) == len(b) and all(np.array_equal(x["row"], y["row"]) for x, y in zip(a, b))
