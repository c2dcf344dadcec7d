"""Supervised segmentation loss: soft Dice + cross-entropy (MONAI ``DiceCELoss``)."""

from __future__ import annotations

import torch
from monai.losses import DiceCELoss


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


def as_target(label: torch.Tensor) -> torch.Tensor:
    """Labels as the ``[B, 1, ...]`` long tensor MONAI's losses expect."""
    return label.long() if label.dim() > 1 and label.shape[1] == 1 else label.long().unsqueeze(1)
