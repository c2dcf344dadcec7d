"""CMC's cross-modality terms (Zhou et al., "Robust semi-supervised multimodal medical image
segmentation via cross modality collaboration", MICCAI 2024): the channel-wise semantic consistency
loss (Eq. 1), the contrastive anatomical consistency loss (Eq. 3) and their ramp weights.

Eq. 1 and Eq. 3 are printed with the same index in the numerator and the denominator, which read
literally only pushes the matched similarities to be equal to one another. Both are implemented
as the InfoNCE losses they cite: a matched pair is the positive, every unmatched pair of the
similarity matrix a negative, averaged over the two directions (a -> b and b -> a) so that they are
symmetric in the modalities.

**Reduction.** Eq. 1 sums over the ``C`` channels and Eq. 3 over the ``M`` samples. Read as sums,
the terms grow with ``C`` and ``M``, and so does the effective weight of ``alpha = beta = 0.1``:
summed over the channels, ``0.1 * L_CSC`` already moves the encoders more than ``L_Sup`` does at
initialisation on a 16-channel bottleneck, averaged it moves them less
(``Testing/library/methods/test_cmc.py``), and this library's reference networks have 64 or 128
channels. The authors' released code averages (its CSC term is a mean over the batch, its CAC a
mean Dice similarity), and the ramp weights are meant to keep the consistency terms below a
supervised loss of order one. ``reduction="mean"`` (default) averages over channels / samples /
classes, so ``alpha`` and ``beta`` weigh a per-item loss of order ``log C`` whatever the width or
batch, as the paper's ramp means them; ``"sum"`` is the printed sums.

**Positives for unpaired scans** (Eq. 3). The paper pairs prediction ``j`` of modality a with
prediction ``j`` of modality b: that means something for its paired data (the same patient,
registered), but for unpaired scans sample ``j`` of CT and sample ``j`` of MR are two random
patches of different patients. :func:`paired_cac_loss` keeps the paper's pairing for paired
data. :func:`prototype_cac_loss` (the default of the method) pairs what unpaired scans do share,
their anatomy: for each class ``k``, the prototype of each modality's unlabelled batch is the mean
of its features weighted by the predicted probability of ``k``; class ``k`` of CT is the positive
of class ``k`` of MR, the other classes are the negatives.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

REDUCTIONS = ("mean", "sum")
CAC_PAIRINGS = ("prototypes", "paired")


def _symmetric_info_nce(sim: torch.Tensor, temperature: float, reduction: str = "mean") -> torch.Tensor:
    """``-log softmax(sim / T)`` on the diagonal, over rows and over columns (averaged over the
    two directions); ``reduction`` ``"mean"`` or ``"sum"`` over the matched pairs."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; choose one of {REDUCTIONS}.")
    logits = sim / temperature
    target = torch.arange(sim.shape[0], device=sim.device)
    return 0.5 * (F.cross_entropy(logits, target, reduction=reduction) + F.cross_entropy(logits.t(), target, reduction=reduction))


def channel_similarity(feat_a: torch.Tensor, feat_b: torch.Tensor) -> torch.Tensor:
    """``[C, C]`` cosine similarities between the channels of two ``[B, C, *S]`` feature maps.

    A channel's vector is its map flattened over the batch and the spatial axes; both inputs must
    have the same shape (same batch size and patch size).
    """
    if feat_a.shape != feat_b.shape:
        raise ValueError(f"channel-wise consistency needs feature maps of one shape, got {tuple(feat_a.shape)} and {tuple(feat_b.shape)}")
    c = feat_a.shape[1]
    va = F.normalize(feat_a.transpose(0, 1).reshape(c, -1).float(), dim=1, eps=1e-6)
    vb = F.normalize(feat_b.transpose(0, 1).reshape(c, -1).float(), dim=1, eps=1e-6)
    return va @ vb.t()


def csc_loss(feat_a: torch.Tensor, feat_b: torch.Tensor, temperature: float = 1.0, reduction: str = "mean") -> torch.Tensor:
    """Channel-wise semantic consistency, Eq. 1: channel ``c`` of ``F_ds^a`` should be most similar
    (cosine) to channel ``c`` of ``F_ds^b`` among all channels of ``F_ds^b``, and vice versa.
    ``temperature`` 1 is the paper's plain cosine similarity."""
    return _symmetric_info_nce(channel_similarity(feat_a, feat_b), temperature, reduction)


def dice_similarity(prob_a: torch.Tensor, prob_b: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """``[B, B]`` soft Dice similarity between every pair of ``[B, K, *S]`` probability maps.

    ``Sim_Dice(p, q) = mean over foreground classes k of 2 sum(p_k q_k) / (sum p_k + sum q_k)``;
    the background channel 0 is left out (a choice: it would dominate every pair).
    """
    pa = prob_a[:, 1:].flatten(2).float()  # [B, K-1, N]
    pb = prob_b[:, 1:].flatten(2).float()
    inter = torch.einsum("ikn,jkn->ijk", pa, pb)
    sums = pa.sum(-1)[:, None, :] + pb.sum(-1)[None, :, :]
    return (2 * inter / (sums + eps)).mean(-1)


def paired_cac_loss(logits_a: torch.Tensor, logits_b: torch.Tensor, temperature: float = 1.0, reduction: str = "mean") -> torch.Tensor:
    """Contrastive anatomical consistency, Eq. 3 as printed, for *paired* data: the prediction of
    sample ``j`` of modality a should be most Dice-similar to sample ``j`` of modality b among the
    batch of b, and vice versa. ``logits_*`` are ``[B, K, *S]``; with one sample per batch there
    is no negative and the loss is 0."""
    if logits_a.shape != logits_b.shape:
        raise ValueError(f"anatomical consistency needs predictions of one shape, got {tuple(logits_a.shape)} and {tuple(logits_b.shape)}")
    sim = dice_similarity(torch.softmax(logits_a.float(), 1), torch.softmax(logits_b.float(), 1))
    return _symmetric_info_nce(sim, temperature, reduction)


cac_loss = paired_cac_loss  # the name of the paper's reading


def class_prototypes(features: torch.Tensor, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(prototypes [K, C], mass [K])`` of a batch: for each class ``k``, the mean of the
    ``[B, C, *S_f]`` features weighted by the predicted probability of ``k`` (``softmax`` of the
    ``[B, K, *S]`` logits, area-resized to ``S_f``), and that probability's total (in voxels of
    ``S_f``). A class with no mass has a zero prototype."""
    probs = torch.softmax(logits.float(), 1)
    if tuple(probs.shape[2:]) != tuple(features.shape[2:]):
        probs = F.interpolate(probs, size=tuple(features.shape[2:]), mode="area")
    weights = probs.movedim(1, 0).flatten(1)  # K, B*V
    feats = features.float().movedim(1, 0).flatten(1)  # C, B*V
    mass = weights.sum(1)
    return weights @ feats.t() / mass.clamp_min(1e-6)[:, None], mass


def prototype_cac_loss(
    feat_a: torch.Tensor,
    logits_a: torch.Tensor,
    feat_b: torch.Tensor,
    logits_b: torch.Tensor,
    temperature: float = 1.0,
    reduction: str = "mean",
    min_mass: float = 1.0,
) -> torch.Tensor:
    """Contrastive anatomical consistency for unpaired scans: class ``k``'s prototype
    (:func:`class_prototypes`) in modality a should be most similar (cosine) to class ``k``'s in
    modality b among b's classes, and vice versa. Only classes whose predicted mass reaches
    ``min_mass`` voxels of the feature grid in both batches take part; with fewer than two there
    is no negative and the loss is 0. Gradients reach the features and, through the class
    weights, the predictions. The batches may differ in size and patch shape."""
    proto_a, mass_a = class_prototypes(feat_a, logits_a)
    proto_b, mass_b = class_prototypes(feat_b, logits_b)
    if proto_a.shape[1] != proto_b.shape[1]:
        raise ValueError(f"prototypes need features of one width, got {proto_a.shape[1]} and {proto_b.shape[1]} channels.")
    shared = (mass_a >= min_mass) & (mass_b >= min_mass)
    if int(shared.sum()) < 2:
        return (proto_a.sum() + proto_b.sum()) * 0.0
    sim = F.normalize(proto_a[shared], dim=1, eps=1e-6) @ F.normalize(proto_b[shared], dim=1, eps=1e-6).t()
    return _symmetric_info_nce(sim, temperature, reduction)


def ramp_up(step: int, total: int, scale: float = 0.1) -> float:
    """``alpha = scale * exp(-5 (1 - t / t_max))`` (the weight of L_CSC); ``t`` clipped to ``[0, t_max]``."""
    t = min(max(step / max(total, 1), 0.0), 1.0)
    return scale * math.exp(-5.0 * (1.0 - t))


def ramp_down(step: int, total: int, scale: float = 0.1) -> float:
    """``beta = scale * exp(-5 t / t_max)`` (the weight of L_CAC); ``t`` clipped to ``[0, t_max]``."""
    t = min(max(step / max(total, 1), 0.0), 1.0)
    return scale * math.exp(-5.0 * t)
