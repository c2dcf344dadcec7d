"""Losses: supervised segmentation losses and the methods' cross-modality terms."""

from .knowledge_distillation import class_mean_logits, kd_loss
from .segmentation import (
    CE_WEIGHTINGS,
    as_target,
    class_balanced_cross_entropy,
    dice_ce_loss,
    l2_penalty,
    segmentation_loss,
)

__all__ = [
    "CE_WEIGHTINGS",
    "as_target",
    "class_balanced_cross_entropy",
    "class_mean_logits",
    "dice_ce_loss",
    "kd_loss",
    "l2_penalty",
    "segmentation_loss",
]
