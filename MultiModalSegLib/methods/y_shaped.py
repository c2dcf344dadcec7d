"""Baseline "Y"-shaped: modality-specific encoders, shared decoder (UMMKD paper, Fig. 1 a, Table I-II)."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

from ..networks import SliceWise
from ..networks.partly_shared import PerModality
from .base import Method, checked_batch_forward
from .registry import register_method


@register_method
class YShaped(Method):
    """Late fusion: each modality has its own encoder levels above the deepest one; from the deepest
    level on, everything is shared (:mod:`..networks.partly_shared` with ``specific=("encoder",)``).

    Where the streams merge is the paper's green line, drawn in a figure only; the parameter scale
    it reports for its 3D U-Net (2124K against 1916K for Joint, +11 %) fits separate encoder levels
    above the deepest and a shared deepest level (about +15 % for a four-level U-Net), which is
    the choice here. Each modality's skip
    connections come from its own encoder. Shared layers keep one BatchNorm for both modalities
    (as in Joint); the loss is the sum of the modalities' Dice + CE.

    As for Joint, a step forwards the modalities' patches as one mixed batch by default
    (``batch_forward="mixed"``): each modality's own layers run on its items, the shared layers on
    the whole batch, so the shared BatchNorm layers train and infer with the statistics of the
    CT+MR mixture; ``"per_modality"`` forwards each modality alone.
    """

    name = "y_shaped"
    paper = "Dou et al., TMI 2020 (UMMKD), baseline Y-shaped (late fusion)"
    equations = "-"
    inference_summary = "the input modality's encoder levels, then the shared bottleneck, decoder and head"
    loss_summary = "Dice + CE per modality, summed (weights 1, 1); CT and MR patches in one mixed batch through the shared layers"

    def __init__(self, network: Mapping, modalities: Sequence[str], n_classes: int, batch_forward: str = "mixed") -> None:
        super().__init__(network, modalities, n_classes)
        self.batch_forward = checked_batch_forward(self, batch_forward)

    def _add_modality_parameters(self, new: str, like: str) -> None:
        """Every per-modality layer group gets a copy of ``like``'s layers for ``new``; shared
        layers stay shared (and get a copy of ``like``'s normalisation set if it is per modality)."""
        for block in list(self.net.modules()):
            if isinstance(block, PerModality):
                block.blocks[new] = copy.deepcopy(block.blocks[like])
        unet = self.net.net if isinstance(self.net, SliceWise) else self.net
        unet.modalities.append(new)
        super()._add_modality_parameters(new, like)
