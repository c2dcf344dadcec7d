"""UMMKD's knowledge-distillation loss (Eq. 2-4) against an independent NumPy computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from MultiModalSegLib.losses import class_mean_logits, kd_loss

torch.set_num_threads(1)

C = 4
SHAPE = (2, 3, 4, 5)  # B, Z, Y, X


def np_class_means(logits: np.ndarray, label: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per class, the mean logit vector over all voxels (all batch items) labelled with that class."""
    lab = label.reshape(label.shape[0], -1)
    flat = logits.reshape(logits.shape[0], logits.shape[1], -1)
    z = np.zeros((n_classes, logits.shape[1]))
    present = np.zeros(n_classes, dtype=bool)
    for c in range(n_classes):
        vectors = [flat[b, :, v] for b in range(lab.shape[0]) for v in range(lab.shape[1]) if lab[b, v] == c]
        if vectors:
            z[c] = np.mean(vectors, axis=0)
            present[c] = True
    return z, present


def np_softmax(v: np.ndarray) -> np.ndarray:
    e = np.exp(v - v.max())
    return e / e.sum()


def np_kd(logits_a, label_a, logits_b, label_b, temperature) -> float:
    za, pa = np_class_means(logits_a, label_a, logits_a.shape[1])
    zb, pb = np_class_means(logits_b, label_b, logits_b.shape[1])
    terms = []
    for c in range(logits_a.shape[1]):
        if not (pa[c] and pb[c]):
            continue
        qa, qb = np_softmax(za[c] / temperature), np_softmax(zb[c] / temperature)
        kl_ab = np.sum(qa * np.log(qa / qb))
        kl_ba = np.sum(qb * np.log(qb / qa))
        terms.append(kl_ab + kl_ba)
    return float(np.mean(terms)) if terms else 0.0


def make_inputs(seed: int = 0):
    """Modality a has no voxel of class 3, modality b none of class 2: only classes 0 and 1 are shared."""
    rng = np.random.default_rng(seed)
    logits_a = rng.normal(0.0, 2.0, (SHAPE[0], C, *SHAPE[1:]))
    logits_b = rng.normal(0.5, 3.0, (SHAPE[0], C, *SHAPE[1:]))
    label_a = rng.choice([0, 1, 2], size=(SHAPE[0], 1, *SHAPE[1:]))
    label_b = rng.choice([0, 1, 3], size=(SHAPE[0], 1, *SHAPE[1:]))
    return logits_a, label_a, logits_b, label_b


def as_torch(*arrays, grad: bool = False):
    return [torch.tensor(a, dtype=torch.float32, requires_grad=grad and a.dtype.kind == "f") for a in arrays]


def test_class_mean_logits_matches_numpy():
    logits, label, _, _ = make_inputs(1)
    label[0, 0, 0, 0, 0] = 3  # a single voxel of class 3
    z, present = class_mean_logits(*as_torch(logits, label), n_classes=C)
    z_np, present_np = np_class_means(logits, label, C)
    assert z.shape == (C, C)
    np.testing.assert_allclose(z.numpy(), z_np, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(present.numpy(), present_np)
    np.testing.assert_allclose(z[3].numpy(), logits[0, :, 0, 0, 0], rtol=1e-6)


def test_class_mean_logits_absent_class_is_zero_and_flagged():
    logits, _, _, label_b = make_inputs(2)
    z, present = class_mean_logits(*as_torch(logits, label_b), n_classes=C)
    assert present.tolist() == [True, True, False, True]
    assert torch.equal(z[2], torch.zeros(C))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("temperature", [1.0, 2.0, 3.5])
def test_kd_loss_matches_numpy(seed, temperature):
    arrays = make_inputs(seed)
    expected = np_kd(*arrays, temperature)
    got = kd_loss(*as_torch(*arrays), temperature=temperature)
    assert got.dim() == 0
    assert float(got) == pytest.approx(expected, rel=1e-4, abs=1e-7)


def test_kd_loss_averages_over_classes_present_in_both_modalities_only():
    logits_a, label_a, logits_b, label_b = make_inputs(3)
    shared_only = np_kd(logits_a, label_a, logits_b, label_b, 2.0)
    # The same computation over every class present in either modality gives another value,
    # so the test tells the two rules apart.
    za, _ = np_class_means(logits_a, label_a, C)
    zb, _ = np_class_means(logits_b, label_b, C)
    union = np.mean([
        np.sum(np_softmax(za[c] / 2) * np.log(np_softmax(za[c] / 2) / np_softmax(zb[c] / 2)))
        + np.sum(np_softmax(zb[c] / 2) * np.log(np_softmax(zb[c] / 2) / np_softmax(za[c] / 2)))
        for c in range(C)
    ])
    assert abs(union - shared_only) > 1e-3
    assert float(kd_loss(*as_torch(logits_a, label_a, logits_b, label_b))) == pytest.approx(shared_only, rel=1e-4)


def test_kd_loss_accepts_labels_without_channel_axis():
    logits_a, label_a, logits_b, label_b = make_inputs(4)
    with_axis = kd_loss(*as_torch(logits_a, label_a, logits_b, label_b))
    without = kd_loss(*as_torch(logits_a, label_a[:, 0], logits_b, label_b[:, 0]))
    torch.testing.assert_close(with_axis, without)


def test_kd_loss_is_symmetric():
    la, ya, lb, yb = as_torch(*make_inputs(5))
    torch.testing.assert_close(kd_loss(la, ya, lb, yb), kd_loss(lb, yb, la, ya))


def test_kd_loss_is_zero_for_identical_inputs_and_positive_otherwise():
    la, ya, lb, yb = as_torch(*make_inputs(6))
    assert float(kd_loss(la, ya, la, ya)) == pytest.approx(0.0, abs=1e-6)
    assert float(kd_loss(la, ya, lb, yb)) > 1e-3
    # Different voxels, same per-class means: still zero (only class means are compared).
    shuffled = torch.flip(la, dims=[0])
    assert float(kd_loss(la, ya, shuffled, torch.flip(ya, dims=[0]))) == pytest.approx(0.0, abs=1e-6)


def test_temperature_changes_the_loss():
    arrays = as_torch(*make_inputs(7))
    t1 = float(kd_loss(*arrays, temperature=1.0))
    t2 = float(kd_loss(*arrays, temperature=2.0))
    assert abs(t1 - t2) > 1e-3
    assert float(kd_loss(*arrays)) == pytest.approx(t2)  # T = 2 by default, as in the paper


def test_gradients_reach_both_modalities_only_through_shared_classes():
    la, ya, lb, yb = as_torch(*make_inputs(8), grad=True)
    assert la.requires_grad and not ya.requires_grad
    kd_loss(la, ya, lb, yb).backward()
    for logits, label, absent in ((la, ya, 2), (lb, yb, 3)):
        grad = logits.grad
        assert grad is not None and torch.isfinite(grad).all()
        mask = (label == absent).expand_as(grad)
        assert grad[~mask].abs().sum() > 0
        assert torch.equal(grad[mask], torch.zeros_like(grad[mask]))  # class not shared: no gradient


def test_no_shared_class_gives_zero_with_a_graph():
    logits_a, label_a, logits_b, label_b = make_inputs(9)
    label_a[:] = 2
    label_b[:] = 3
    la, ya, lb, yb = as_torch(logits_a, label_a, logits_b, label_b, grad=True)
    loss = kd_loss(la, ya, lb, yb)
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert torch.equal(la.grad, torch.zeros_like(la))


def test_half_precision_logits_are_computed_in_float32():
    arrays = make_inputs(10)
    la, ya, lb, yb = as_torch(*arrays)
    loss = kd_loss(la.to(torch.bfloat16), ya, lb.to(torch.bfloat16), yb)
    assert loss.dtype == torch.float32
    assert float(loss) == pytest.approx(np_kd(*arrays, 2.0), rel=5e-2)


def test_float16_autocast_gives_the_float32_loss():
    """A GPU trains under float16 autocast: the class sums over a patch's voxels stay in float32
    (in float16 they overflow past 65504 and the loss is NaN from the first step)."""
    g = torch.Generator().manual_seed(3)
    logits_a, logits_b = (8 + torch.randn(2, C, 24, 32, 32, generator=g) for _ in range(2))
    label_a, label_b = (torch.randint(0, C, (2, 1, 24, 32, 32), generator=g) for _ in range(2))
    expected = kd_loss(logits_a, label_a, logits_b, label_b)
    with torch.autocast("cpu", dtype=torch.float16):
        got = kd_loss(logits_a.half(), label_a, logits_b.half(), label_b)
    assert torch.isfinite(got)
    assert float(got) == pytest.approx(float(expected), rel=0.05, abs=1e-4)
