"""LSSC losses (Eq. 12-14) against small NumPy computations, and their invariants."""

from __future__ import annotations

import numpy as np
import torch

from MultiModalSegLib.losses.structured_consistency import (
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
    assert np.isclose(float(loss), expected, atol=1e-5)
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
    assert np.isclose(float(loss), total, atol=1e-5)
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
