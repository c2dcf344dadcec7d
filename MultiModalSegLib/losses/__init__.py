"""Losses: supervised segmentation losses and the methods' cross-modality terms."""

from .knowledge_distillation import class_mean_logits, kd_loss
from .segmentation import as_target, dice_ce_loss

__all__ = ["as_target", "class_mean_logits", "dice_ce_loss", "kd_loss"]
