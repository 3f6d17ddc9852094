"""Class balancing on the training stream (in the worker, no Ray needed)."""

import numpy as np

from ray_jobs.train import balance_rates, balanced_stream


def _stream(n_batches: int, batch_size: int, fake_share: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    for i in range(n_batches):
        labels = (rng.random(batch_size) < fake_share).astype(np.int64)
        yield {"label": labels, "row": np.arange(i * batch_size, (i + 1) * batch_size)}


def test_balanced_stream_equalises_classes_in_fixed_size_batches():
    counts = {0: 900, 1: 100}  # as announced by the shards' label counts
    rates = balance_rates(counts)
    assert rates == {0: 1000 / 1800, 1: 1000 / 200}
    out = list(balanced_stream(_stream(40, 25, 0.1), rates, 32, np.random.default_rng(1)))
    sizes = [len(b["label"]) for b in out]
    assert all(s == 32 for s in sizes[:-1]) and 2 <= sizes[-1] <= 32
    labels = np.concatenate([b["label"] for b in out])
    assert abs(labels.mean() - 0.5) < 0.06, labels.mean()
    assert abs(len(labels) - 1000) < 120  # one epoch is still about N rows
    # every row comes from the input, and fakes are repeated (sampling with replacement)
    rows = np.concatenate([b["row"] for b in out])
    assert rows.max() < 1000 and len(np.unique(rows[labels == 1])) < (labels == 1).sum()


def test_balanced_stream_is_reproducible_by_seed():
    rates = balance_rates({0: 3, 1: 1})
    a = list(balanced_stream(_stream(5, 16, 0.25), rates, 16, np.random.default_rng([0, 2, 0])))
    b = list(balanced_stream(_stream(5, 16, 0.25), rates, 16, np.random.default_rng([0, 2, 0])))
    assert all(np.array_equal(x["row"], y["row"]) for x, y in zip(a, b)) and len(a) == len(b)
