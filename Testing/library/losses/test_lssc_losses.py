"""LSSC losses (Eq. 12-14) against small NumPy computations, and their invariants."""

from __future__ import annotations

import numpy as np
import torch

from MultiModalSegLib.losses.structured_consistency import (
    auxiliary_loss,
    image_consistency_loss,
    majority_labels,
    modality_consistency_loss,
)


def np_log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_mcr_matches_numpy_is_symmetric_and_zero_for_identical_embeddings():
    torch.manual_seed(0)
    qa, qb = torch.randn(5, 16, requires_grad=True), torch.randn(5, 16)
    a, b = qa.detach().numpy(), qb.numpy()
    expected = sum(1 - a[i] @ b[i] / (np.linalg.norm(a[i]) * np.linalg.norm(b[i])) for i in range(5))
    loss = modality_consistency_loss(qa, qb)
    assert np.isclose(float(loss.detach()), expected, atol=1e-5)
    assert torch.isclose(loss, modality_consistency_loss(qb, qa))
    assert abs(float(modality_consistency_loss(qb, qb.clone()))) < 1e-6
    loss.backward()
    assert qa.grad is not None and qa.grad.abs().sum() > 0


def test_icr_matches_numpy_over_every_cross_modal_pair():
    torch.manual_seed(1)
    ea = [torch.randn(2, 4, 4, requires_grad=True), torch.randn(2, 4, 4)]
    eb = [torch.randn(3, 4, 4), torch.randn(3, 4, 4)]
    tau = 4.0
    total = 0.0
    for s in range(2):
        pairs = []
        for i in range(2):
            for j in range(3):
                la = np_log_softmax(ea[s][i].detach().numpy() / tau)
                lb = np_log_softmax(eb[s][j].numpy() / tau)
                kl = (np.exp(la) * (la - lb)).sum(-1) + (np.exp(lb) * (lb - la)).sum(-1)
                pairs.append(kl.sum())
        total += np.mean(pairs)
    loss = image_consistency_loss(ea, eb, tau)
    assert np.isclose(float(loss.detach()), total, atol=1e-5)
    assert torch.isclose(loss, image_consistency_loss(eb, ea, tau))
    same = [e[:1].detach() for e in ea]
    assert abs(float(image_consistency_loss(same, [s.clone() for s in same], tau))) < 1e-6
    loss.backward()
    assert ea[0].grad.abs().sum() > 0


def test_majority_labels_take_the_most_frequent_class_of_each_block():
    rng = np.random.default_rng(0)
    label = rng.integers(0, 3, size=(1, 1, 4, 4, 4))
    out = majority_labels(torch.from_numpy(label), (2, 2, 2), 3).numpy()
    for z in range(2):
        for y in range(2):
            for x in range(2):
                block = label[0, 0, 2 * z : 2 * z + 2, 2 * y : 2 * y + 2, 2 * x : 2 * x + 2].ravel()
                assert out[0, 0, z, y, x] == np.bincount(block, minlength=3).argmax()


def np_dice_ce(logits: np.ndarray, label: np.ndarray, n_classes: int) -> float:
    """Cross-entropy over all classes (mean over voxels) + foreground Dice pooled over the batch."""
    log_p = np_log_softmax(np.moveaxis(logits, 1, -1))  # B, *S, Z
    onehot = np.eye(n_classes)[label[:, 0]]  # B, *S, Z
    ce = -(onehot * log_p).sum(-1).mean()
    p = np.exp(log_p)
    axes = tuple(range(p.ndim - 1))
    inter, denom = (p * onehot).sum(axes), p.sum(axes) + onehot.sum(axes)
    dice = 1 - (2 * inter + 1e-5) / (denom + 1e-5)
    return ce + dice[1:].mean()


def np_majority(label: np.ndarray, size: tuple[int, ...], n_classes: int) -> np.ndarray:
    k = [s // t for s, t in zip(label.shape[2:], size, strict=True)]
    out = np.zeros((label.shape[0], 1, *size), dtype=np.int64)
    for b in range(label.shape[0]):
        for idx in np.ndindex(*size):
            block = label[b, 0][tuple(slice(i * kk, (i + 1) * kk) for i, kk in zip(idx, k, strict=True))]
            out[(b, 0, *idx)] = np.bincount(block.ravel(), minlength=n_classes).argmax()
    return out


def test_aux_matches_numpy_summed_over_scales_and_reaches_the_logits():
    torch.manual_seed(2)
    label = torch.randint(0, 3, (2, 1, 4, 4, 4))
    aux = [torch.randn(2, 3, 1, 2, 2, requires_grad=True), torch.randn(2, 3, 2, 2, 2, requires_grad=True), torch.randn(2, 3, 4, 4, 4, requires_grad=True)]
    loss = auxiliary_loss(aux, label)
    lab = label.numpy()
    expected = sum(np_dice_ce(a.detach().numpy(), np_majority(lab, a.shape[2:], 3), 3) for a in aux)
    assert np.isclose(float(loss.detach()), expected, atol=1e-5)
    # logits that put (almost) all mass on the true class at every scale give (almost) zero loss
    perfect = [torch.from_numpy(40.0 * np.moveaxis(np.eye(3)[np_majority(lab, a.shape[2:], 3)[:, 0]], -1, 1)).float() for a in aux]
    assert float(auxiliary_loss(perfect, label)) < 1e-3
    loss.backward()
    assert all(a.grad is not None and a.grad.abs().sum() > 0 for a in aux)
