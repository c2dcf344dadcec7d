"""UMMKD (Dou et al., "Unpaired multi-modal segmentation via knowledge distillation", TMI 2020)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import torch

from ..errors import ConfigError
from ..losses import CE_WEIGHTINGS, as_target, kd_loss, l2_penalty, segmentation_loss
from .base import Batch, Method
from .registry import register_method


def pairwise_kd(logits: Mapping[str, torch.Tensor], batches: Mapping[str, Batch], temperature: float) -> torch.Tensor:
    """``L_kd`` (Eq. 2-4) between every pair of modalities, averaged over the pairs (0 with one)."""
    pairs = list(itertools.combinations(logits, 2))
    if not pairs:
        return torch.zeros((), device=next(iter(logits.values())).device)
    return torch.stack(
        [
            kd_loss(logits[a], as_target(batches[a]["label"]), logits[b], as_target(batches[b]["label"]), temperature)
            for a, b in pairs
        ]
    ).mean()


class DistillationTerms:
    """What UMMKD adds to a method's segmentation losses (Eq. 5), shared with ``joint_kd``:
    ``alpha/2 L_kd`` and, when ``l2_weight`` (the paper's eta) is set, ``eta ||Theta||^2``;
    ``ce_weighting`` chooses the segmentation loss's cross-entropy."""

    def _init_terms(self, alpha: float, temperature: float, l2_weight: float, ce_weighting: str) -> None:
        if ce_weighting not in CE_WEIGHTINGS:
            raise ConfigError(f"{self.name}: ce_weighting {ce_weighting!r} is unknown; choose one of {list(CE_WEIGHTINGS)}.")
        if not float(l2_weight) >= 0:
            raise ConfigError(f"{self.name}: l2_weight (eta) must be 0 or more, got {l2_weight!r}.")
        self.alpha, self.temperature = alpha, temperature
        self.l2_weight, self.ce_weighting = float(l2_weight), ce_weighting
        self.seg_loss = segmentation_loss(ce_weighting)

    def add_terms(self, losses: dict[str, torch.Tensor], logits: Mapping[str, torch.Tensor], batches: Mapping[str, Batch]) -> dict:
        """``losses`` (the per-modality ``seg_*``) with ``kd``, ``l2`` and the total ``loss``."""
        seg = sum(losses.values())
        losses["kd"] = pairwise_kd(logits, batches, self.temperature)
        total = seg + self.alpha / 2 * losses["kd"]
        if self.l2_weight:
            losses["l2"] = l2_penalty(self.net)
            total = total + self.l2_weight * losses["l2"]
        losses["loss"] = total
        return losses


@register_method
class UMMKD(DistillationTerms, Method):
    """Shared convolution kernels with one BatchNorm set per modality, plus the KD loss.

    Total loss, Eq. 5: ``L = L_seg^CT + L_seg^MR + alpha/2 * L_kd + eta * ||Theta||^2`` with
    ``alpha = 0.5`` and ``T = 2`` (Eq. 3). ``L_seg`` is Dice + cross-entropy. With more than two
    modalities ``L_kd`` is averaged over all modality pairs (a choice; the paper has two). Setting
    ``norm`` to ``modality_instance`` keeps per-modality affine parameters with instance statistics.

    The L2 term: ``l2_weight`` is the paper's ``eta``. It is 0 by default, and the training
    configs regularise through the optimiser's ``weight_decay`` instead (AdamW's decoupled decay),
    which is *not* the paper's term: under Adam an L2 penalty's gradient is rescaled per parameter
    like every other gradient, decoupled decay is not. ``l2_weight: 1e-4`` with ``weight_decay: 0``
    in the config is Eq. 5 as written (the penalty then appears as ``l2`` in the logged losses).

    The cross-entropy: the paper combines Dice with a "pixel-wise weighted cross-entropy" without
    giving the weights. ``ce_weighting="none"`` (default) is the plain, unweighted cross-entropy;
    ``"class_balanced"`` weights each voxel by the inverse of its class's voxel count in the batch
    (:func:`..losses.segmentation.class_balanced_cross_entropy`), one common reading.
    """

    name = "ummkd"
    default_norm = "modality_batch"
    paper = "Dou et al., TMI 2020 (UMMKD)"
    equations = "Eq. 1 (modality-specific norms), 2-4 (KD loss), 5 (total)"
    loss_summary = (
        "sum of Dice + CE + alpha/2 L_kd (+ eta ||Theta||^2 with l2_weight); alpha 0.5, T 2, eta 0 (configs use AdamW "
        "weight decay); CE unweighted (class_balanced optional)"
    )
    inference_summary = "the shared network with the input modality's BatchNorm set"
    trains_ensembles = True  # the network is used only as net(image, modality): Method.train_as_ensemble

    def __init__(
        self,
        network: Mapping,
        modalities: Sequence[str],
        n_classes: int,
        alpha: float = 0.5,
        temperature: float = 2.0,
        l2_weight: float = 0.0,
        ce_weighting: str = "none",
    ) -> None:
        super().__init__(network, modalities, n_classes)
        if not self.network_spec["params"]["norm"].startswith("modality_"):
            raise ConfigError("UMMKD needs modality-specific normalisation: norm 'modality_batch' or 'modality_instance'.")
        self._init_terms(alpha, temperature, l2_weight, ce_weighting)

    def training_step(self, batches: Mapping[str, Batch]) -> dict[str, torch.Tensor]:
        logits, losses = self.segmentation_losses(batches)
        return self.add_terms(losses, logits, batches)
