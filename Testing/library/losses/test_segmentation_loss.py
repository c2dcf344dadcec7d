"""The segmentation losses: class-balanced cross-entropy by hand, the L2 penalty, the loss factory."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from MultiModalSegLib.losses import class_balanced_cross_entropy, dice_ce_loss, l2_penalty, segmentation_loss

torch.set_num_threads(1)


def test_class_balanced_cross_entropy_is_the_mean_over_classes_of_each_class_mean():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 3, 5, 5, generator=g)
    target = torch.zeros(2, 1, 3, 5, 5, dtype=torch.long)
    target[0, 0, 1, 2, 2] = 1  # one voxel of class 1
    target[1, 0, :, :2] = 2  # 30 voxels of class 2; class 3 absent
    per_voxel = -torch.log_softmax(logits, 1).gather(1, target)[:, 0]  # -log p(true class)
    per_class = [per_voxel[target[:, 0] == c].mean() for c in range(3)]
    expected = sum(per_class) / 3
    torch.testing.assert_close(class_balanced_cross_entropy(logits, target), expected)
    plain = per_voxel.mean()  # the unweighted CE counts the one class-1 voxel once among 150
    assert abs(float(plain) - float(expected)) > 1e-3


def test_segmentation_loss_factory():
    logits, target = torch.randn(1, 3, 4, 4, 4), torch.randint(0, 3, (1, 1, 4, 4, 4))
    torch.testing.assert_close(segmentation_loss()(logits, target), dice_ce_loss()(logits, target))
    balanced = segmentation_loss("class_balanced")(logits, target)
    dice_only = dice_ce_loss(1.0, 0.0)(logits, target)
    torch.testing.assert_close(balanced, dice_only + class_balanced_cross_entropy(logits, target))
    with pytest.raises(ValueError, match="ce_weighting"):
        segmentation_loss("median")


def test_l2_penalty_is_the_sum_of_squares_of_the_trainable_parameters():
    net = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    frozen = nn.Linear(5, 5).requires_grad_(False)
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(0.5)
    n = 2 * 3 + 3 + 3 * 1 + 1
    with torch.no_grad():
        assert float(l2_penalty(nn.ModuleList([net, frozen]))) == pytest.approx(n * 0.25)
        assert math.isclose(float(l2_penalty(net)), n * 0.25)
