"""Binary detection metrics on arrays (torchmetrics' functional forms): AUC, log loss, EER, accuracy.

Probabilities are of the *fake* class; labels are 0 real / 1 fake. Log loss clips probabilities to
``[eps, 1 - eps]`` as DFDC's scorer does.
"""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics.functional.classification import binary_auroc, binary_roc

EPS = 1e-7


def _t(x) -> torch.Tensor:
    return torch.from_numpy(np.array(x, dtype=np.float64))  # a copy: inputs may be read-only views


def auc(probs, labels) -> float:
    """ROC AUC; 0.5 when only one class is present."""
    y = _t(labels).long()
    if y.numel() == 0 or y.min() == y.max():
        return 0.5
    return float(binary_auroc(_t(probs), y))


def log_loss(probs, labels, eps: float = EPS) -> float:
    p = _t(probs).clamp(eps, 1 - eps)
    y = _t(labels)
    return float(-(y * p.log() + (1 - y) * (1 - p).log()).mean())


def eer(probs, labels) -> float:
    """Equal error rate: where the false-positive rate equals the false-negative rate."""
    y = _t(labels).long()
    if y.numel() == 0 or y.min() == y.max():
        return 0.5
    fpr, tpr, _ = binary_roc(_t(probs), y)
    fnr = 1 - tpr
    i = int(torch.argmin((fpr - fnr).abs()))
    return float((fpr[i] + fnr[i]) / 2)


def roc_curve(probs, labels) -> tuple[np.ndarray, np.ndarray]:
    fpr, tpr, _ = binary_roc(_t(probs), _t(labels).long())
    return fpr.numpy(), tpr.numpy()


def class_accuracy(probs, labels, threshold: float = 0.5) -> dict[str, float]:
    p, y = np.asarray(probs), np.asarray(labels)
    pred = (p >= threshold).astype(int)
    out = {}
    for name, c in (("real", 0), ("fake", 1)):
        m = y == c
        out[f"acc_{name}"] = float((pred[m] == c).mean()) if m.any() else float("nan")
    out["acc"] = float((pred == y).mean()) if len(y) else float("nan")
    return out


def summary(probs, labels, prefix: str = "") -> dict[str, float]:
    """AUC, log loss, EER and per-class accuracy in one dict."""
    out = {"auc": auc(probs, labels), "log_loss": log_loss(probs, labels), "eer": eer(probs, labels),
           **class_accuracy(probs, labels), "n": int(len(np.asarray(labels)))}
    return {f"{prefix}{k}": v for k, v in out.items()}
