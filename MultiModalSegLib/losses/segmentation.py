"""Supervised segmentation loss: soft Dice + cross-entropy (MONAI ``DiceCELoss``), and the
class-balanced variant of the cross-entropy."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss, DiceLoss
from torch import nn

CE_WEIGHTINGS = ("none", "class_balanced")


def dice_ce_loss(dice_weight: float = 1.0, ce_weight: float = 1.0) -> DiceCELoss:
    """Dice over the foreground classes (batch-wise) plus cross-entropy over all classes.

    Targets are label maps ``[B, 1, ...]`` with integer class values; inputs are logits.
    """
    return DiceCELoss(
        to_onehot_y=True,
        softmax=True,
        include_background=False,
        batch=True,
        lambda_dice=dice_weight,
        lambda_ce=ce_weight,
    )


def class_balanced_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Pixel-wise weighted cross-entropy: every voxel weighted by the inverse of its class's voxel
    count in the batch, so the loss is the mean over the classes present of each class's mean
    cross-entropy (a small organ counts as much as the background). ``target`` ``[B, 1, ...]``."""
    labels = target[:, 0].long()
    counts = torch.bincount(labels.flatten(), minlength=logits.shape[1]).to(logits.dtype)
    weight = torch.where(counts > 0, 1.0 / counts.clamp_min(1.0), torch.zeros_like(counts))
    return F.cross_entropy(logits, labels, weight=weight)


class DiceWeightedCELoss(nn.Module):
    """``dice_ce_loss`` with :func:`class_balanced_cross_entropy` in place of the plain cross-entropy."""

    def __init__(self, dice_weight: float = 1.0, ce_weight: float = 1.0) -> None:
        super().__init__()
        self.dice = DiceLoss(to_onehot_y=True, softmax=True, include_background=False, batch=True)
        self.dice_weight, self.ce_weight = dice_weight, ce_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.dice_weight * self.dice(logits, target) + self.ce_weight * class_balanced_cross_entropy(logits, target)


def segmentation_loss(ce_weighting: str = "none", dice_weight: float = 1.0, ce_weight: float = 1.0) -> nn.Module:
    """Dice + cross-entropy; ``ce_weighting`` ``"none"`` (plain CE) or ``"class_balanced"``."""
    if ce_weighting == "none":
        return dice_ce_loss(dice_weight, ce_weight)
    if ce_weighting == "class_balanced":
        return DiceWeightedCELoss(dice_weight, ce_weight)
    raise ValueError(f"unknown ce_weighting {ce_weighting!r}; choose one of {CE_WEIGHTINGS}.")


def l2_penalty(module: nn.Module) -> torch.Tensor:
    """``||Theta||_2^2``: the sum of the squares of every trainable parameter of ``module``."""
    params = [p for p in module.parameters() if p.requires_grad]
    return torch.stack([p.float().pow(2).sum() for p in params]).sum()


def as_target(label: torch.Tensor) -> torch.Tensor:
    """Labels as the ``[B, 1, ...]`` long tensor MONAI's losses expect."""
    return label.long() if label.dim() > 1 and label.shape[1] == 1 else label.long().unsqueeze(1)
