"""UMMKD's cross-modality knowledge-distillation loss (Dou et al., TMI 2020, Eq. 2-4)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def class_mean_logits(logits: torch.Tensor, label: torch.Tensor, n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 2: for every class ``c``, the mean pre-softmax activation vector over all voxels of the
    batch whose ground truth is ``c``.

    Returns ``(z, present)``: ``z[c]`` is a ``C``-vector (zeros where ``c`` is absent), ``present[c]``
    tells whether class ``c`` occurs in the batch's ground truth. Summed in float32 outside any
    autocast region: a float16 sum over a patch's voxels overflows (a NaN loss on the first step).
    """
    with torch.autocast(logits.device.type, enabled=False):
        onehot = F.one_hot(label.long().reshape(label.shape[0], -1), n_classes).float()  # B, V, C
        flat = logits.float().reshape(logits.shape[0], logits.shape[1], -1)  # B, C, V
        sums = torch.einsum("bvc,bkv->ck", onehot, flat)  # class c, channel k
    counts = onehot.sum(dim=(0, 1))
    z = sums / counts.clamp_min(1.0).unsqueeze(1)
    return z, counts > 0


def kd_loss(
    logits_a: torch.Tensor,
    label_a: torch.Tensor,
    logits_b: torch.Tensor,
    label_b: torch.Tensor,
    temperature: float = 2.0,
) -> torch.Tensor:
    """Eq. 3-4: symmetric KL divergence between the two modalities' softened class distributions.

    ``q_c = softmax(z_c / T)`` per modality (Eq. 3); the loss is
    ``1/C' * sum_c [KL(q_c^a || q_c^b) + KL(q_c^b || q_c^a)]`` (Eq. 4). Choice made here: the
    mean runs over the ``C'`` classes present in *both* modalities' ground truth of this step,
    because a class absent from one batch has no mean activation to compare; with no shared class
    the loss is zero. Logits ``[B, C, ...]``; labels ``[B, 1, ...]`` or ``[B, ...]``.
    """
    n_classes = logits_a.shape[1]
    za, pa = class_mean_logits(logits_a.float(), label_a, n_classes)
    zb, pb = class_mean_logits(logits_b.float(), label_b, n_classes)
    shared = pa & pb
    if not bool(shared.any()):
        return logits_a.sum() * 0.0 + logits_b.sum() * 0.0
    log_qa = F.log_softmax(za[shared] / temperature, dim=1)
    log_qb = F.log_softmax(zb[shared] / temperature, dim=1)
    kl_ab = (log_qa.exp() * (log_qa - log_qb)).sum(dim=1)
    kl_ba = (log_qb.exp() * (log_qb - log_qa)).sum(dim=1)
    return (kl_ab + kl_ba).mean()
