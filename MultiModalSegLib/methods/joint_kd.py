"""Baseline "Joint+KD": the fully shared Joint network trained with UMMKD's KD loss (UMMKD paper, Table I-II)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from .base import Batch
from .joint import Joint
from .registry import register_method
from .ummkd import DistillationTerms


@register_method
class JointKD(DistillationTerms, Joint):
    """Every parameter shared, BatchNorm included (as :class:`.joint.Joint`, mixed CT+MR batches by
    default), with UMMKD's loss: ``L_seg^CT + L_seg^MR + alpha/2 L_kd`` (Eq. 5, ``alpha = 0.5``,
    ``T = 2``; ``l2_weight`` and ``ce_weighting`` as in :class:`.ummkd.UMMKD`). The paper's row
    "Joint+KD" isolates what the KD term gives without modality-specific normalisation; the KD term
    compares the class-wise mean logits of the CT items and of the MR items of the step.
    """

    name = "joint_kd"
    paper = "Dou et al., TMI 2020 (UMMKD), baseline Joint+KD"
    equations = "Eq. 2-4 (KD loss), 5 (total)"
    loss_summary = "sum of Dice + CE + alpha/2 L_kd; alpha 0.5, T 2; CT and MR patches in one mixed batch"
    inference_summary = "one network, every parameter shared (shared BatchNorm, trained on mixed CT+MR batches)"

    def __init__(
        self,
        network: Mapping,
        modalities: Sequence[str],
        n_classes: int,
        alpha: float = 0.5,
        temperature: float = 2.0,
        l2_weight: float = 0.0,
        ce_weighting: str = "none",
        batch_forward: str = "mixed",
    ) -> None:
        super().__init__(network, modalities, n_classes, batch_forward)
        self._init_terms(alpha, temperature, l2_weight, ce_weighting)

    def training_step(self, batches: Mapping[str, Batch]) -> dict[str, torch.Tensor]:
        logits, losses = self.segmentation_losses(batches)
        return self.add_terms(losses, logits, batches)
