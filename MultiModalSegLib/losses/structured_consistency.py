"""LSSC's losses (Yang et al., "... learning structured semantic consistency", Sec. 3.4, Eq. 12-14)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .segmentation import dice_ce_loss


def majority_labels(label: torch.Tensor, size: Sequence[int], n_classes: int) -> torch.Tensor:
    """The ground truth at a coarser scale (Eq. 12's ``Y_lambda``): each coarse voxel takes the class
    most of its fine voxels have (ties to the lower class). ``label`` ``[B, 1, *S]`` with ``S`` a
    multiple of ``size``; returns ``[B, 1, *size]`` (long). The paper does not say how it
    down-samples; a majority vote keeps small organs better than picking one voxel."""
    spatial = label.shape[2:]
    if tuple(spatial) == tuple(size):
        return label.long()
    onehot = F.one_hot(label[:, 0].long(), n_classes).movedim(-1, 1).float()
    kernel = [s // t for s, t in zip(spatial, size, strict=True)]
    pool = F.avg_pool3d if len(spatial) == 3 else F.avg_pool2d
    return pool(onehot, kernel).argmax(1, keepdim=True)


def auxiliary_loss(aux_logits: Sequence[torch.Tensor], label: torch.Tensor) -> torch.Tensor:
    """Eq. 12: ``L_aux = sum_lambda [CE + Dice](F_1x1(A_lambda), Y_lambda)`` over the given scales.

    ``aux_logits`` are the per-scale class logits ``[B, Z, *S_lambda]``; ``label`` is the full
    resolution ground truth ``[B, 1, *S]``, brought to each scale by :func:`majority_labels`. Dice and
    cross-entropy are the library's ``dice_ce_loss`` (foreground Dice, batch-wise)."""
    loss_fn = dice_ce_loss()
    total = aux_logits[0].new_zeros(())
    for logits in aux_logits:
        target = majority_labels(label, logits.shape[2:], logits.shape[1])
        total = total + loss_fn(logits, target)
    return total


def modality_consistency_loss(q_a: torch.Tensor, q_b: torch.Tensor) -> torch.Tensor:
    """Eq. 13: ``L_mcr = sum_i (1 - cos(Q_a^i, Q_b^i))`` between two modalities' class embeddings
    ``[Z, D]`` (summed over the ``Z`` classes, as in the paper). Symmetric; zero when equal."""
    return (1.0 - F.cosine_similarity(q_a, q_b, dim=-1, eps=1e-8)).sum()


def image_consistency_loss(e_a: Sequence[torch.Tensor], e_b: Sequence[torch.Tensor], tau: float = 4.0) -> torch.Tensor:
    """Eq. 14: symmetric KL divergence between the softened correlation rows of two modalities.

    ``e_a[lambda]`` is ``[B_a, Z, Z]`` (row ``i`` = class ``i``'s correlation vector ``E^i`` of one
    image at Scale-lambda), ``e_b[lambda]`` is ``[B_b, Z, Z]``. For one image pair the loss is
    ``sum_lambda sum_i [KL(s(E_a^i/tau) || s(E_b^i/tau)) + KL(s(E_b^i/tau) || s(E_a^i/tau))]`` with
    ``s`` the softmax over the class dimension ``j``. Choice: the paper compares "any two images
    from different modalities"; here every cross-modal pair of the two batches is used and the
    loss is the mean over the ``B_a * B_b`` pairs. No ``tau**2`` factor (the paper has none).
    """
    total = None
    for a, b in zip(e_a, e_b, strict=True):
        log_a = F.log_softmax(a.float() / tau, dim=-1)[:, None]  # B_a, 1, Z, Z
        log_b = F.log_softmax(b.float() / tau, dim=-1)[None]  # 1, B_b, Z, Z
        kl = (log_a.exp() * (log_a - log_b)).sum(-1) + (log_b.exp() * (log_b - log_a)).sum(-1)  # B_a, B_b, Z
        term = kl.sum(-1).mean()
        total = term if total is None else total + term
    if total is None:
        raise ValueError("image_consistency_loss needs correlations at one scale at least.")
    return total
