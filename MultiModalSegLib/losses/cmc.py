"""CMC's cross-modality terms (Zhou et al., "Robust semi-supervised multimodal medical image
segmentation via cross modality collaboration", MICCAI 2024): the channel-wise semantic consistency
loss (Eq. 1), the contrastive anatomical consistency loss (Eq. 3) and their ramp weights.

Eq. 1 and Eq. 3 are printed with the same index in the numerator and the denominator, which read
literally only pushes the matched similarities to be equal to one another. Both are implemented
as the InfoNCE losses they cite: a matched pair (the same channel, Eq. 1; the same batch position,
Eq. 3) is the positive, every unmatched pair of the similarity matrix a negative. Both are
averaged over the two directions (a -> b and b -> a), so they are symmetric in the modalities,
and averaged (not summed) over channels / samples so that their scale does not grow with C or B.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _symmetric_info_nce(sim: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean of ``-log softmax(sim / T)`` on the diagonal, over rows and over columns."""
    logits = sim / temperature
    target = torch.arange(sim.shape[0], device=sim.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


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


def csc_loss(feat_a: torch.Tensor, feat_b: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Channel-wise semantic consistency, Eq. 1: channel ``c`` of ``F_ds^a`` should be most similar
    (cosine) to channel ``c`` of ``F_ds^b`` among all channels of ``F_ds^b``, and vice versa.
    ``temperature`` 1 is the paper's plain cosine similarity."""
    return _symmetric_info_nce(channel_similarity(feat_a, feat_b), temperature)


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


def cac_loss(logits_a: torch.Tensor, logits_b: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Contrastive anatomical consistency, Eq. 3, on unlabelled predictions of the two modalities:
    the prediction of sample ``j`` of modality a should be most Dice-similar to sample ``j`` of
    modality b among the batch of b, and vice versa. ``logits_*`` are ``[B, K, *S]``; with one sample
    per batch there is no negative and the loss is 0."""
    if logits_a.shape != logits_b.shape:
        raise ValueError(f"anatomical consistency needs predictions of one shape, got {tuple(logits_a.shape)} and {tuple(logits_b.shape)}")
    sim = dice_similarity(torch.softmax(logits_a.float(), 1), torch.softmax(logits_b.float(), 1))
    return _symmetric_info_nce(sim, temperature)


def ramp_up(step: int, total: int, scale: float = 0.1) -> float:
    """``alpha = scale * exp(-5 (1 - t / t_max))`` (the weight of L_CSC); ``t`` clipped to ``[0, t_max]``."""
    t = min(max(step / max(total, 1), 0.0), 1.0)
    return scale * math.exp(-5.0 * (1.0 - t))


def ramp_down(step: int, total: int, scale: float = 0.1) -> float:
    """``beta = scale * exp(-5 t / t_max)`` (the weight of L_CAC); ``t`` clipped to ``[0, t_max]``."""
    t = min(max(step / max(total, 1), 0.0), 1.0)
    return scale * math.exp(-5.0 * t)
