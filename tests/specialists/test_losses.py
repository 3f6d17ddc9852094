import pytest
import torch
import torch.nn.functional as F

from specialists.losses import FocalLoss, LossKind, build_loss, class_weights_from_counts


def test_focal_gamma0_no_alpha_equals_cross_entropy():
    torch.manual_seed(0)
    logits, target = torch.randn(64, 2) * 3, torch.randint(0, 2, (64,))
    assert torch.allclose(FocalLoss(gamma=0.0)(logits, target), F.cross_entropy(logits, target), atol=1e-6)


def test_focal_downweights_easy_examples():
    logits = torch.tensor([[4.0, -4.0], [0.1, -0.1]])
    target = torch.tensor([0, 0])
    per = [FocalLoss(gamma=2.0)(logits[i:i + 1], target[i:i + 1]) / F.cross_entropy(logits[i:i + 1], target[i:i + 1])
           for i in range(2)]
    assert per[0] < per[1] < 1


def test_focal_alpha_weights_classes():
    logits = torch.zeros(2, 2)
    loss_fake = FocalLoss(gamma=0, alpha=0.25)(logits[:1], torch.tensor([1]))
    loss_real = FocalLoss(gamma=0, alpha=0.25)(logits[:1], torch.tensor([0]))
    assert torch.isclose(loss_fake / loss_real, torch.tensor(0.25 / 0.75))


def test_class_weights_follow_label_counts():
    w = class_weights_from_counts({0: 100, 1: 400})
    assert torch.allclose(w, torch.tensor([500 / (2 * 100), 500 / (2 * 400)]))
    assert w[0] / w[1] == pytest.approx(4.0)
    # weighted loss: the rare class counts as much in total as the common one
    loss = build_loss(LossKind.WEIGHTED_FOCAL, gamma=0.0, class_counts=[100, 400])
    logits = torch.zeros(500, 2)
    target = torch.cat([torch.zeros(100), torch.ones(400)]).long()
    per_sample = -F.log_softmax(logits, 1).gather(1, target[:, None]).squeeze(1)
    assert torch.isclose(loss(logits, target), (per_sample * w[target]).mean())


def test_bad_loss_parameters():
    with pytest.raises(ValueError, match="gamma"):
        FocalLoss(gamma=-1)
    with pytest.raises(ValueError, match="class counts"):
        build_loss(LossKind.WEIGHTED_FOCAL)
