"""The training stream's last mile, in the worker: class balancing and rows -> tensors.

:class:`ClipCollate` is the ``collate_fn`` of ``iter_torch_batches``: Ray Data runs it in its
prefetch threads, so both steps overlap the training step instead of counting as data wait.
Kept apart from the driver's modules (``plan``, ``trainer``) because it imports Ray Data, which the processes that only
plan or drive trainers do not need.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
from ray.data.collate_fn import NumpyBatchCollateFn

from data_pipeline.batch import rows_to_batch
from data_pipeline.pseudo_fakes import PseudoFakes, replace_fakes_with_pseudo_fakes

PSEUDO_FAKE_STREAM = 0x5B1  # seeds the pseudo-fake draws apart from the class-balancing draws


def balance_batch(batch: dict[str, np.ndarray], rates: dict[int, float],
                  rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Class-balance one batch of rows, keeping its size.

    Row ``i`` of class ``c`` is expected ``e_i = n r_c / sum_j r_j`` times in the output (with
    ``r_c = N / (K n_c)`` both classes come out equally often in expectation, as with
    ``WeightedRandomSampler``), and gets ``floor(e_i)`` or ``ceil(e_i)`` copies: systematic
    (low-variance) resampling with one uniform draw. So a majority-class row is kept at most once
    and every minority-class row at least ``floor(e_i)`` times; sampling ``n`` rows with
    replacement instead would keep only ~63% distinct rows of a batch, and trained visibly worse
    (docs/experiments.md).

    Batch sizes, and so the number of steps, stay those of the input stream: every DDP rank of an
    equally split dataset takes the same number of steps. This runs in the training worker on the
    batches it streams from its dataset shard (:class:`ClipCollate`): resampling rows there costs
    next to nothing, while a Ray Data ``map_batches`` stage copies every clip through another
    task each epoch.
    """
    labels = np.asarray(batch["label"])
    weights = np.array([rates.get(int(c), 0.0) for c in labels], dtype=np.float64)
    n = len(labels)
    if n == 0 or weights.sum() <= 0:
        return batch
    edges = np.cumsum(weights) / weights.sum() * n  # row i owns [edges[i-1], edges[i])
    points = rng.random() + np.arange(n)  # n evenly spaced points, one random offset
    idx = np.minimum(np.searchsorted(edges, points, side="right"), n - 1)
    return {k: np.asarray(v)[idx] for k, v in batch.items()}


def balance_rates(counts: dict[int, int]) -> dict[int, float]:
    """Per-class sampling rates ``N / (K n_c)`` of the classes present (sklearn's "balanced")."""
    total = sum(counts.values())
    present = [c for c, n in counts.items() if n > 0]
    return {c: total / (len(present) * counts[c]) for c in present}


class ClipCollate(NumpyBatchCollateFn):
    """``iter_torch_batches`` collate function: Ray Data calls it in its prefetch threads, so
    class balancing and the bytes -> tensor conversion (``rows_to_batch``) overlap the training
    step instead of counting as data wait.

    ``rates``: class-balance each batch (:func:`balance_batch`) with a generator seeded by
    ``seed`` and the batch's content, so draws do not depend on which prefetch thread runs first.
    ``pseudo_fakes``: then replace a share of the batch's fakes by self-blended pseudo-fakes of its
    real clips (:func:`~data_pipeline.pseudo_fakes.replace_fakes_with_pseudo_fakes`), seeded the
    same way.
    ``uint8_frames``: leave the frames uint8 for the training device to convert
    (:func:`~data_pipeline.batch.frames_to_float`).
    """

    def __init__(self, rates: dict[int, float] | None = None, seed: Sequence[int] = (0,),
                 uint8_frames: bool = False, pseudo_fakes: PseudoFakes | None = None):
        self.rates = rates
        self.seed = list(seed)
        self.uint8_frames = uint8_frames
        self.pseudo_fakes = pseudo_fakes

    def __call__(self, batch: dict[str, np.ndarray]) -> dict:
        if self.rates is not None or self.pseudo_fakes is not None:  # validation streams draw nothing
            content = _content_seed(batch)
            if self.rates is not None:
                batch = balance_batch(batch, self.rates, np.random.default_rng([*self.seed, *content]))
            if self.pseudo_fakes is not None:
                rng = np.random.default_rng([*self.seed, PSEUDO_FAKE_STREAM, *content])
                batch = replace_fakes_with_pseudo_fakes(batch, self.pseudo_fakes, rng)
        return rows_to_batch(batch, uint8_frames=self.uint8_frames)


def _content_seed(batch: dict[str, np.ndarray]) -> list[int]:
    """Seed words from a batch's content (its labels and first clip), taken before any draw changes it."""
    labels = np.ascontiguousarray(np.asarray(batch["label"], dtype=np.int64))
    return [zlib.crc32(labels.tobytes()), zlib.crc32(bytes(batch["frames"][0]))] if len(labels) else []
