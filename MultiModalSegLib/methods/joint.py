"""Baseline "Joint": one network, every parameter shared by all modalities (UMMKD paper, Table I)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .base import Method, checked_batch_forward
from .registry import register_method


@register_method
class Joint(Method):
    """Plain joint training: the sum of the modalities' Dice+CE losses on a fully shared network.

    Normalisation is shared too (``batch`` by default). As in the paper ("in each training
    iteration, we input half of the batch as CT and the other half as MRI"), each step forwards
    the modalities' patches *together*, concatenated into one batch (``batch_forward="mixed"``,
    default): a shared BatchNorm normalises with the statistics of the mixed CT+MR batch in
    training and keeps running statistics of that same mixture for inference, so training and
    testing agree. ``batch_forward="per_modality"`` forwards each modality's batch alone (this
    library's earlier reading): each shared BatchNorm then trains on one modality's statistics at a
    time but infers with running statistics averaged over both, which neither modality was trained
    with. The losses are per modality in both cases. A modality-specific ``norm`` in the config
    turns this into UMMKD without its KD term (the paper's "Chilopod"); in a mixed batch each
    modality's normalisation set then acts on its own items.
    """

    name = "joint"
    paper = "Dou et al., TMI 2020 (UMMKD), baseline Joint"
    equations = "-"
    loss_summary = "Dice + CE per modality, summed (weights 1, 1); CT and MR patches in one mixed batch"
    inference_summary = "one network, every parameter shared (shared BatchNorm, trained on mixed CT+MR batches)"
    trains_ensembles = True  # the network is used only as net(image, modality): Method.train_as_ensemble

    def __init__(self, network: Mapping, modalities: Sequence[str], n_classes: int, batch_forward: str = "mixed") -> None:
        super().__init__(network, modalities, n_classes)
        self.batch_forward = checked_batch_forward(self, batch_forward)
