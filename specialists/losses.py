"""Stage losses: cross-entropy, focal (alpha, gamma) and class-weighted focal.

Focal loss (Lin et al., 2017) on the two-logit output: ``FL = -a_t (1 - p_t)^gamma log(p_t)``.
``alpha`` follows the RetinaNet convention for the positive class (fake = 1): the fake class is
weighted ``alpha`` and the real class ``1 - alpha``; ``alpha=None`` weights both 1. With
``gamma=0`` and ``alpha=None`` it is exactly cross-entropy. The class-weighted variant multiplies
each sample by ``N / (K * n_class)`` computed from the training label counts (sklearn's
"balanced" weights), for DFDC's fake-heavy label mix.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import Enum

import torch
import torch.nn.functional as F
from torch import nn


class LossKind(str, Enum):
    CROSS_ENTROPY = "cross_entropy"
    FOCAL = "focal"
    WEIGHTED_FOCAL = "weighted_focal"


def class_weights_from_counts(counts: Sequence[int] | Mapping[int, int], num_classes: int = 2) -> torch.Tensor:
    """Per-class weights ``N / (K * n_c)``; a class with no samples gets weight 0."""
    if isinstance(counts, Mapping):
        counts = [int(counts.get(c, 0)) for c in range(num_classes)]
    n = torch.tensor([float(c) for c in counts])
    if n.numel() != num_classes or (n < 0).any():
        raise ValueError(f"expected {num_classes} non-negative class counts, got {list(counts)}")
    total = n.sum()
    if total <= 0:
        raise ValueError("class counts are all zero")
    present = (n > 0).sum()
    return torch.where(n > 0, total / (present * n.clamp_min(1)), torch.zeros_like(n))


class FocalLoss(nn.Module):
    def __init__(self, gamma: float = 2.0, alpha: float | None = None,
                 class_weights: torch.Tensor | None = None):
        super().__init__()
        if gamma < 0:
            raise ValueError(f"focal gamma must be >= 0, got {gamma}")
        if alpha is not None and not 0 <= alpha <= 1:
            raise ValueError(f"focal alpha must be in [0, 1], got {alpha}")
        self.gamma = gamma
        self.alpha = alpha
        self.register_buffer("class_weights", class_weights, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logp = F.log_softmax(logits.float(), dim=1)
        logp_t = logp.gather(1, target[:, None]).squeeze(1)
        p_t = logp_t.exp()
        loss = -((1 - p_t) ** self.gamma) * logp_t if self.gamma else -logp_t
        if self.alpha is not None:
            loss = loss * torch.where(target == 1, self.alpha, 1 - self.alpha)
        if self.class_weights is not None:
            loss = loss * self.class_weights.to(loss.device)[target]
        return loss.mean()


def build_loss(kind: LossKind, *, gamma: float = 2.0, alpha: float | None = None,
               class_counts: Sequence[int] | Mapping[int, int] | None = None) -> nn.Module:
    """The loss of a stage recipe. ``weighted_focal`` needs the training ``class_counts``."""
    kind = LossKind(kind)
    if kind is LossKind.CROSS_ENTROPY:
        return nn.CrossEntropyLoss()
    if kind is LossKind.FOCAL:
        return FocalLoss(gamma=gamma, alpha=alpha)
    if class_counts is None:
        raise ValueError("weighted_focal loss needs the training split's class counts")
    return FocalLoss(gamma=gamma, alpha=alpha, class_weights=class_weights_from_counts(class_counts))
