"""UMMKD (Dou et al., "Unpaired multi-modal segmentation via knowledge distillation", TMI 2020)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import torch

from ..errors import ConfigError
from ..losses import as_target, kd_loss
from .base import Batch, Method
from .registry import register_method


@register_method
class UMMKD(Method):
    """Shared convolution kernels with one BatchNorm set per modality, plus the KD loss.

    Total loss, Eq. 5: ``L = L_seg^CT + L_seg^MR + alpha/2 * L_kd`` with ``alpha = 0.5`` and
    ``T = 2`` (Eq. 3). ``L_seg`` is Dice + cross-entropy. The paper's explicit L2 term
    ``eta * ||Theta||^2`` (eta = 1e-4) is the optimiser's weight decay here (AdamW, decoupled).
    With more than two modalities ``L_kd`` is averaged over all modality pairs (a choice; the
    paper has two). Setting ``norm`` to ``modality_instance`` keeps per-modality affine
    parameters with instance statistics instead.
    """

    name = "ummkd"
    default_norm = "modality_batch"
    paper = "Dou et al., TMI 2020 (UMMKD)"
    equations = "Eq. 1 (modality-specific norms), 2-4 (KD loss), 5 (total)"
    loss_summary = "sum of Dice + CE + alpha/2 L_kd; alpha 0.5, T 2; L2 term as AdamW weight decay"
    inference_summary = "the shared network with the input modality's BatchNorm set"

    def __init__(
        self, network: Mapping, modalities: Sequence[str], n_classes: int, alpha: float = 0.5, temperature: float = 2.0
    ) -> None:
        super().__init__(network, modalities, n_classes)
        if not self.network_spec["params"]["norm"].startswith("modality_"):
            raise ConfigError("UMMKD needs modality-specific normalisation: norm 'modality_batch' or 'modality_instance'.")
        self.alpha = alpha
        self.temperature = temperature

    def training_step(self, batches: Mapping[str, Batch]) -> dict[str, torch.Tensor]:
        logits, losses = self.segmentation_losses(batches)
        pairs = list(itertools.combinations(batches, 2))
        if pairs:
            kd = torch.stack(
                [
                    kd_loss(
                        logits[a], as_target(batches[a]["label"]), logits[b], as_target(batches[b]["label"]), self.temperature
                    )
                    for a, b in pairs
                ]
            ).mean()
        else:
            kd = torch.zeros((), device=next(iter(logits.values())).device)
        total = sum(losses.values()) + self.alpha / 2 * kd
        losses["kd"] = kd
        losses["loss"] = total
        return losses
