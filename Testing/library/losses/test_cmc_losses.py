import math

import numpy as np
import pytest
import torch

from MultiModalSegLib.losses.cmc import cac_loss, csc_loss, dice_similarity, ramp_down, ramp_up


def _np_info_nce(sim: np.ndarray, t: float) -> float:
    """Symmetric InfoNCE with the diagonal as positives, written out with NumPy."""
    z = sim / t

    def one_way(m):
        return float(np.mean([-(m[i, i] - np.log(np.exp(m[i]).sum())) for i in range(len(m))]))

    return 0.5 * (one_way(z) + one_way(z.T))


def _np_csc(a: np.ndarray, b: np.ndarray, t: float) -> float:
    c = a.shape[1]
    va = np.moveaxis(a, 1, 0).reshape(c, -1)
    vb = np.moveaxis(b, 1, 0).reshape(c, -1)
    sim = np.array([[va[i] @ vb[j] / np.linalg.norm(va[i]) / np.linalg.norm(vb[j]) for j in range(c)] for i in range(c)])
    return _np_info_nce(sim, t)


def _softmax(x):
    e = np.exp(x - x.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _np_cac(la: np.ndarray, lb: np.ndarray, t: float) -> float:
    pa, pb = _softmax(la), _softmax(lb)
    n, k = la.shape[0], la.shape[1]
    sim = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            sim[i, j] = np.mean([2 * (pa[i, c] * pb[j, c]).sum() / (pa[i, c].sum() + pb[j, c].sum() + 1e-5) for c in range(1, k)])
    return _np_info_nce(sim, t)


@pytest.mark.parametrize("t", [1.0, 0.2])
def test_csc_matches_numpy(t):
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 5, 3, 4, 2)), rng.normal(size=(2, 5, 3, 4, 2))
    got = float(csc_loss(torch.tensor(a), torch.tensor(b), t))
    assert got == pytest.approx(_np_csc(a, b, t), rel=1e-5)


def test_csc_is_symmetric_and_lower_for_aligned_channels():
    torch.manual_seed(0)
    a, b = torch.randn(2, 6, 4, 4, 4), torch.randn(2, 6, 4, 4, 4)
    assert float(csc_loss(a, b)) == pytest.approx(float(csc_loss(b, a)), rel=1e-6)
    # identical features: each channel matches itself best, the loss is below the chance level log C
    assert float(csc_loss(a, a, 0.1)) < float(csc_loss(a, b, 0.1))
    assert float(csc_loss(a, a, 0.1)) < math.log(6)


def test_csc_gradients_reach_both_inputs():
    a = torch.randn(2, 4, 3, 3, 3, requires_grad=True)
    b = torch.randn(2, 4, 3, 3, 3, requires_grad=True)
    csc_loss(a, b).backward()
    assert a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0


def test_csc_refuses_different_shapes():
    with pytest.raises(ValueError, match="one shape"):
        csc_loss(torch.randn(2, 4, 3, 3, 3), torch.randn(1, 4, 3, 3, 3))


def test_dice_similarity_by_hand():
    # two samples, background + one class over 2 voxels
    pa = torch.tensor([[[0.0, 1.0], [1.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]]])  # [B=2, K=2, N=2]
    sim = dice_similarity(pa, pa, eps=0.0)
    # class 1 of sample 0 is voxel 0, of sample 1 voxel 1: Dice 1 on the diagonal, 0 off it
    np.testing.assert_allclose(sim.numpy(), [[1.0, 0.0], [0.0, 1.0]])


@pytest.mark.parametrize("t", [1.0, 0.5])
def test_cac_matches_numpy(t):
    rng = np.random.default_rng(1)
    la, lb = rng.normal(size=(3, 4, 2, 3, 3)), rng.normal(size=(3, 4, 2, 3, 3))
    got = float(cac_loss(torch.tensor(la), torch.tensor(lb), t))
    assert got == pytest.approx(_np_cac(la, lb, t), rel=1e-5)


def test_cac_is_symmetric_and_zero_without_negatives():
    torch.manual_seed(1)
    la, lb = torch.randn(3, 3, 4, 4, 4), torch.randn(3, 3, 4, 4, 4)
    assert float(cac_loss(la, lb)) == pytest.approx(float(cac_loss(lb, la)), rel=1e-6)
    assert float(cac_loss(la[:1], lb[:1])) == pytest.approx(0.0, abs=1e-7)


def test_cac_gradients_reach_both_predictions():
    la = torch.randn(2, 3, 4, 4, 4, requires_grad=True)
    lb = torch.randn(2, 3, 4, 4, 4, requires_grad=True)
    cac_loss(la, lb).backward()
    assert la.grad.abs().sum() > 0 and lb.grad.abs().sum() > 0


def test_ramp_weights_at_start_middle_and_end():
    assert ramp_up(0, 100) == pytest.approx(0.1 * math.exp(-5))
    assert ramp_up(50, 100) == pytest.approx(0.1 * math.exp(-2.5))
    assert ramp_up(100, 100) == pytest.approx(0.1)
    assert ramp_down(0, 100) == pytest.approx(0.1)
    assert ramp_down(50, 100) == pytest.approx(0.1 * math.exp(-2.5))
    assert ramp_down(100, 100) == pytest.approx(0.1 * math.exp(-5))
    assert ramp_up(150, 100) == pytest.approx(0.1) and ramp_down(150, 100) == pytest.approx(0.1 * math.exp(-5))
