import math

import numpy as np
import pytest
import torch

from MultiModalSegLib.losses.cmc import (
    cac_loss,
    class_prototypes,
    csc_loss,
    dice_similarity,
    paired_cac_loss,
    prototype_cac_loss,
    ramp_down,
    ramp_up,
)


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


def test_sum_reduction_is_the_printed_equations_and_mean_divides_by_the_items():
    torch.manual_seed(2)
    a, b = torch.randn(2, 6, 3, 3, 3), torch.randn(2, 6, 3, 3, 3)
    torch.testing.assert_close(csc_loss(a, b, reduction="sum"), 6 * csc_loss(a, b))
    la, lb = torch.randn(3, 3, 4, 4, 4), torch.randn(3, 3, 4, 4, 4)
    torch.testing.assert_close(paired_cac_loss(la, lb, reduction="sum"), 3 * paired_cac_loss(la, lb))
    assert cac_loss is paired_cac_loss
    with pytest.raises(ValueError, match="reduction"):
        csc_loss(a, b, reduction="max")


def hard_logits(label: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Logits whose softmax is (to float precision) the one-hot of ``label`` [B, 1, *S]."""
    return 60.0 * torch.nn.functional.one_hot(label[:, 0], n_classes).movedim(-1, 1).float()


def test_class_prototypes_by_hand():
    label = torch.zeros(1, 1, 2, 2, 2, dtype=torch.long)
    label[0, 0, 0] = 1  # four voxels of class 1, four of class 0, none of class 2
    features = torch.arange(16, dtype=torch.float32).reshape(1, 2, 2, 2, 2)
    protos, mass = class_prototypes(features, hard_logits(label, 3))
    torch.testing.assert_close(mass, torch.tensor([4.0, 4.0, 0.0]))
    torch.testing.assert_close(protos[1], torch.tensor([1.5, 9.5]))  # mean of 0..3 and of 8..11
    torch.testing.assert_close(protos[0], torch.tensor([5.5, 13.5]))
    # a coarser feature grid: the probabilities are averaged over each feature voxel
    protos, mass = class_prototypes(torch.ones(1, 2, 1, 1, 1), hard_logits(label, 3))
    torch.testing.assert_close(mass, torch.tensor([0.5, 0.5, 0.0]))


def anatomy(seed: int, batch: int, swap: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Unpaired patches: random class layouts; each class has its own feature direction (the two
    foreground directions exchanged when ``swap``), plus noise."""
    g = torch.Generator().manual_seed(seed)
    label = torch.randint(0, 3, (batch, 1, 4, 4, 4), generator=g)
    directions = torch.eye(3)[[0, 2, 1]] if swap else torch.eye(3)
    features = directions[label[:, 0]].movedim(-1, 1) + 0.1 * torch.randn(batch, 3, 4, 4, 4, generator=g)
    return features, hard_logits(label, 3)


def test_prototype_cac_rewards_shared_anatomy_and_ignores_which_patch_is_which():
    fa, la = anatomy(0, batch=3)
    fb, lb = anatomy(1, batch=2)  # another batch size, other patients
    matched = float(prototype_cac_loss(fa, la, fb, lb))
    swapped = float(prototype_cac_loss(fa, la, *anatomy(1, batch=2, swap=True)))
    assert matched < math.log(3) < swapped  # chance level log K between them
    order = torch.tensor([1, 0])  # the samples of b in another order: the same loss
    assert float(prototype_cac_loss(fa, la, fb[order], lb[order])) == pytest.approx(matched, rel=1e-6)
    assert float(prototype_cac_loss(fb, lb, fa, la)) == pytest.approx(matched, rel=1e-6)  # symmetric
    # the paper's pairing, on these unpaired patches, depends on the order it is given them
    _, lb3 = anatomy(1, batch=3)
    paired = float(paired_cac_loss(la, lb3))
    assert abs(float(paired_cac_loss(la, lb3[torch.tensor([2, 0, 1])])) - paired) > 1e-3


def test_prototype_cac_leaves_out_classes_without_predicted_mass():
    fa, la = anatomy(2, batch=2)
    fb, lb = anatomy(3, batch=2)
    la2, lb2 = la.clone(), lb.clone()
    la2[:, 2], lb2[:, 2] = -60.0, -60.0  # class 2 predicted nowhere: two classes remain
    two = prototype_cac_loss(fa, la2, fb, lb2)
    assert 0 < float(two) < math.log(2)
    la2[:, 1] = -60.0  # only the background left: no negative, no loss (still in the graph)
    fa.requires_grad_(True)
    none = prototype_cac_loss(fa, la2, fb, lb2)
    assert float(none.detach()) == 0.0
    none.backward()
    assert torch.equal(fa.grad, torch.zeros_like(fa))


def test_prototype_cac_gradients_reach_features_and_predictions():
    fa, la = anatomy(4, batch=2)
    fb, lb = anatomy(5, batch=2)
    fa.requires_grad_(True)
    la = (la / 30).requires_grad_(True)  # soft predictions: the class weights can move
    prototype_cac_loss(fa, la, fb, lb).backward()
    assert fa.grad.abs().sum() > 0 and la.grad.abs().sum() > 0


def test_ramp_weights_at_start_middle_and_end():
    assert ramp_up(0, 100) == pytest.approx(0.1 * math.exp(-5))
    assert ramp_up(50, 100) == pytest.approx(0.1 * math.exp(-2.5))
    assert ramp_up(100, 100) == pytest.approx(0.1)
    assert ramp_down(0, 100) == pytest.approx(0.1)
    assert ramp_down(50, 100) == pytest.approx(0.1 * math.exp(-2.5))
    assert ramp_down(100, 100) == pytest.approx(0.1 * math.exp(-5))
    assert ramp_up(150, 100) == pytest.approx(0.1) and ramp_down(150, 100) == pytest.approx(0.1 * math.exp(-5))
