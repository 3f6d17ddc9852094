"""Train / validate one specialist for one stage: the loop every worker runs.

:class:`SpecialistRunner` knows nothing about Ray or files: it takes iterables of batches (the
training-batch contract of ``docs/architecture.md``) and a model that may or may not be wrapped in
DDP, so the same object runs in a plain process (tests, benchmarks) and inside a Ray Train worker
(``ray_jobs/worker.py``), unchanged.

* AMP on CUDA: bf16 where supported, otherwise fp16 with a gradient scaler; off on CPU.
* Validation metrics are torchmetrics objects, which all-gather their state across DDP ranks, so
  AUC, per-class accuracy and log loss are those of the whole validation split on every rank.
* Every epoch re-seeds torch from ``(seed, epoch, rank)``: dropout and augmentation draws are a
  function of the epoch, so a run resumed after epoch k ends with the same weights as one that
  never stopped.
"""

from __future__ import annotations

import gc
import math
import sys
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager, nullcontext

import torch
import torchmetrics
from torch import nn

from data_pipeline.augment import augment_batch, build_augmentation
from data_pipeline.batch import frames_to_float
from ray_jobs.config import StageRecipe
from ray_jobs.layout import HISTORY_KEYS
from specialists.losses import LossKind, build_loss
from specialists.model import SpecialistModel, model_inputs

LOG_LOSS_EPS = 1e-7  # probabilities are clipped to [eps, 1 - eps] for log loss (DFDC's metric)


def unwrap(model: nn.Module) -> SpecialistModel:
    """The bare :class:`SpecialistModel` inside a DDP / compiled wrapper."""
    while hasattr(model, "module") and not isinstance(model, SpecialistModel):
        model = model.module
    while hasattr(model, "_orig_mod"):
        model = model._orig_mod
    return model  # type: ignore[return-value]


def improves(history: list[dict]) -> bool:
    """Whether the last epoch of ``history`` beats every earlier one on validation AUC (a tie does
    not): the rule for the weights a stage keeps and the epochs it checkpoints."""
    return history[-1]["val_auc"] > max((h["val_auc"] for h in history[:-1]), default=-1.0)


def amp_settings(device: torch.device) -> tuple[bool, torch.dtype | None]:
    """(enabled, dtype): bf16 on CUDA where supported, else fp16; disabled on CPU."""
    if device.type != "cuda":
        return False, None
    return True, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _write_stderr(msg: str) -> None:
    # not print(): Ray Train patches print in its workers to log each line and also pass it on,
    # so every progress line reached the driver twice
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


class SpecialistRunner:
    """One (specialist, stage) training run: optimiser, scheduler, loss, AMP, metrics, progress."""

    def __init__(self, model: nn.Module, recipe: StageRecipe, *, device: torch.device | str = "cpu",
                 class_counts: dict[int, int] | None = None, seed: int = 0, rank: int = 0,
                 log_every: int = 20, tag: str = "", log: Callable[[str], None] | None = None):
        self.device = torch.device(device)
        self.model = model
        self.core = unwrap(model)
        self.recipe = recipe
        self.seed = seed
        self.rank = rank
        self.log_every = log_every
        self.tag = tag or f"{self.core.config.specialist}/{recipe.name}"
        self._log = log or _write_stderr
        self.core.set_dropout(recipe.dropout)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.optimizer, T_max=recipe.total_epochs, eta_min=recipe.lr * 0.05)
        self.loss_fn = build_loss(recipe.loss, gamma=recipe.focal_gamma, alpha=recipe.focal_alpha,
                                  class_counts=class_counts if recipe.loss is LossKind.WEIGHTED_FOCAL else None)
        self.amp, self.amp_dtype = amp_settings(self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and self.amp_dtype == torch.float16)
        self.augment = build_augmentation(recipe.augmentation)
        self.epoch = 0  # completed epochs of this stage
        self.steps = 0  # optimiser steps taken in this stage (the warm-up counts them)
        self.history: list[dict] = []  # per-epoch metrics, carried in checkpoints across restarts
        self.best: tuple[int, float, dict] | None = None
        """``(epoch, val_auc, model weights on CPU)`` of the best validation AUC seen by this
        process (the first of equal ones), kept when ``fit(keep_best=True)``; ``None`` after a
        restore until an epoch beats the restored history."""
        self.metrics = {
            "auc": torchmetrics.classification.BinaryAUROC(),
            "acc": torchmetrics.classification.MulticlassAccuracy(num_classes=2, average=None),
            "log_loss": torchmetrics.MeanMetric(),
            "loss": torchmetrics.MeanMetric(),
        }
        for m in self.metrics.values():
            m.to(self.device)

    # ----------------------------------------------------------------------------- helpers
    def log(self, msg: str) -> None:
        if self.rank == 0:
            self._log(f"[{self.tag}] {msg}")

    def _autocast(self):
        return torch.autocast("cuda", dtype=self.amp_dtype) if self.amp else nullcontext()

    @contextmanager
    def _warmup(self):
        """During the recipe's warm-up, scale the learning rate the epoch's schedule set by
        ``(steps + 1) / warmup_steps`` for this optimiser step, then restore it."""
        warmup = self.recipe.warmup_steps
        if self.steps >= warmup:
            yield
            return
        scheduled = [g["lr"] for g in self.optimizer.param_groups]
        for g in self.optimizer.param_groups:
            g["lr"] *= (self.steps + 1) / warmup
        try:
            yield
        finally:
            for g, lr in zip(self.optimizer.param_groups, scheduled):
                g["lr"] = lr

    def _to_device(self, batch: dict) -> dict:
        """The batch's tensors on the runner's device; uint8 frames become float in ``[0, 1]``
        there (``rows_to_batch(uint8_frames=True)``: a quarter of the bytes to copy)."""
        out = {k: (v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}
        if torch.is_tensor(out.get("frames")):
            out["frames"] = frames_to_float(out["frames"])
        return out

    def forward(self, batch: dict) -> torch.Tensor:
        return self.model(**model_inputs(batch))

    def chunk_of(self, epoch: int) -> int:
        """The chunk (0-based) that epoch ``epoch`` (0-based) of a progressive stage trains on."""
        return epoch // self.recipe.epochs

    # ----------------------------------------------------------------------------- epochs
    def train_epoch(self, batches: Iterable[dict]) -> dict:
        """One pass over ``batches``; returns train loss, samples, throughput and data-wait share
        (of the whole epoch; the wait for its first batch in seconds; the share after it)."""
        torch.manual_seed(self.seed * 100_003 + self.epoch * 1_009 + self.rank)
        self.model.train()
        total_loss, samples, steps, wait, first_wait = 0.0, 0, 0, 0.0, 0.0
        start = tick = time.perf_counter()
        lr = self.optimizer.param_groups[0]["lr"]
        for batch in batches:
            wait += time.perf_counter() - tick
            if steps == 0:
                first_wait = wait
            batch = self._to_device(batch)
            frames = augment_batch(batch["frames"], self.augment)
            batch = {**batch, "frames": frames}
            with self._autocast():
                logits = self.forward(batch)
            loss = self.loss_fn(logits.float(), batch["label"])
            if not torch.isfinite(loss):
                raise FloatingPointError(f"[{self.tag}] non-finite loss at epoch {self.epoch + 1} step {steps}")
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            with self._warmup():
                self.scaler.step(self.optimizer)
            self.scaler.update()
            self.steps += 1
            n = batch["label"].shape[0]
            total_loss += loss.item() * n
            samples += n
            steps += 1
            if self.log_every and steps % self.log_every == 0:
                el = time.perf_counter() - start
                self.log(f"epoch {self.epoch + 1}/{self.recipe.total_epochs} step {steps} "
                         f"loss {total_loss / samples:.4f} {samples / el:.1f} samples/s lr {lr:.2e}")
            tick = time.perf_counter()
        elapsed = time.perf_counter() - start
        if samples == 0:
            raise ValueError(f"[{self.tag}] epoch {self.epoch + 1}: the training data yielded no batch")
        # data wait split in two: the first batch (the stream starting: reads, shuffle buffer
        # fill), a fixed cost per epoch, and the steps after it, which prefetching should hide
        later = elapsed - first_wait
        return {"train_loss": total_loss / samples, "train_samples": samples,
                "train_samples_per_s": samples / elapsed, "data_wait_frac": wait / elapsed,
                "data_wait_first_s": first_wait,
                "data_wait_step_frac": (wait - first_wait) / later if later > 0 else 0.0, "lr": lr}

    @torch.no_grad()
    def predict(self, batches: Iterable[dict]) -> tuple[torch.Tensor, torch.Tensor]:
        """(fake probabilities, labels) over ``batches`` on this rank."""
        self.model.eval()
        probs, labels = [], []
        for batch in batches:
            batch = self._to_device(batch)
            with self._autocast():
                logits = self.forward(batch)
            probs.append(torch.softmax(logits.float(), dim=1)[:, 1])
            labels.append(batch["label"])
        if not probs:  # e.g. a DDP rank given no test files
            return torch.zeros(0, device=self.device), torch.zeros(0, dtype=torch.long, device=self.device)
        return torch.cat(probs), torch.cat(labels)

    @torch.no_grad()
    def validate(self, batches: Iterable[dict], prefix: str = "val") -> dict:
        """AUC, log loss, loss and per-class accuracy over all ranks' batches."""
        self.model.eval()
        for m in self.metrics.values():
            m.reset()
        for batch in batches:
            batch = self._to_device(batch)
            with self._autocast():
                logits = self.forward(batch).float()
            y = batch["label"]
            p = torch.softmax(logits, dim=1)[:, 1].clamp(LOG_LOSS_EPS, 1 - LOG_LOSS_EPS)
            self.metrics["auc"].update(p, y)
            self.metrics["acc"].update(logits.argmax(dim=1), y)
            self.metrics["log_loss"].update(-(y * p.log() + (1 - y) * (1 - p).log()))
            self.metrics["loss"].update(self.loss_fn(logits, y), weight=y.shape[0])
        acc = self.metrics["acc"].compute().tolist()
        out = {
            f"{prefix}_auc": float(self.metrics["auc"].compute()),
            f"{prefix}_log_loss": float(self.metrics["log_loss"].compute()),
            f"{prefix}_loss": float(self.metrics["loss"].compute()),
            f"{prefix}_acc_real": float(acc[0]),
            f"{prefix}_acc_fake": float(acc[1]),
        }
        out[f"{prefix}_acc_balanced"] = (out[f"{prefix}_acc_real"] + out[f"{prefix}_acc_fake"]) / 2
        for k, v in out.items():
            if math.isnan(v):
                out[k] = 0.0 if "acc" in k else 0.5 if "auc" in k else v
        return out

    def fit(self, train_batches: Callable[[int], Iterable[dict]], val_batches: Callable[[], Iterable[dict]],
            on_epoch_end: Callable[[dict], None] | None = None, stop_at: int | None = None,
            keep_best: bool = False) -> dict:
        """Train from ``self.epoch`` to the recipe's total epochs (or to epoch ``stop_at``).

        ``train_batches(epoch)`` gives the batches of a 0-based epoch (a progressive stage picks
        the epoch's chunk from it); ``on_epoch_end(metrics)`` is where callers checkpoint/report.
        ``keep_best``: keep a CPU copy of the weights of the best validation AUC in ``self.best``
        (the model the stage exports), so the caller can score it without reloading a checkpoint.
        """
        metrics: dict = {}
        last = self.recipe.total_epochs if stop_at is None else min(stop_at, self.recipe.total_epochs)
        while self.epoch < last:
            epoch = self.epoch
            t0 = time.perf_counter()
            train = self.train_epoch(train_batches(epoch))
            val = self.validate(val_batches())
            self.scheduler.step()
            self.epoch += 1
            metrics = {**train, **val, "epoch": self.epoch, "chunk": self.chunk_of(epoch),
                       "chunk_done": self.epoch % self.recipe.epochs == 0,
                       "epoch_time_s": time.perf_counter() - t0}
            self.history.append({k: metrics[k] for k in HISTORY_KEYS})
            if keep_best and improves(self.history):
                weights = {k: v.detach().to("cpu", copy=True) for k, v in self.core.state_dict().items()}
                self.best = (self.epoch, val["val_auc"], weights)
            self.log(f"epoch {self.epoch}/{self.recipe.total_epochs} train_loss {train['train_loss']:.4f} "
                     f"val_auc {val['val_auc']:.4f} val_log_loss {val['val_log_loss']:.4f} "
                     f"acc real/fake {val['val_acc_real']:.3f}/{val['val_acc_fake']:.3f} "
                     f"({metrics['epoch_time_s']:.1f}s)")
            if on_epoch_end is not None:
                on_epoch_end(metrics)
        return metrics

    # ----------------------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {
            "model": self.core.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "epoch": self.epoch,
            "steps": self.steps,
            "history": list(self.history),
        }

    def load_state_dict(self, state: dict) -> None:
        self.core.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
        self.epoch = int(state["epoch"])
        # a checkpoint without the step count (written before it was kept): no warm-up after an epoch
        self.steps = int(state.get("steps", self.recipe.warmup_steps if self.epoch else 0))
        self.history = list(state.get("history", []))

    def close(self) -> None:
        """Release memory between stages."""
        self.optimizer.state.clear()
        for m in self.metrics.values():
            m.reset()
        del self.optimizer, self.model, self.core
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
