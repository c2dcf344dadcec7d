"""CSA's class-specific affinity loss (Eq. 2-4), checked by hand-built cases, SciPy's cosine and the
properties the paper asks for (size invariance, channel-count invariance), not by re-implementing it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cosine as scipy_cosine_distance

from MultiModalSegLib.losses.class_affinity import class_affinity_matrices, class_masks, csa_loss

torch.set_num_threads(1)

C = 4
GRID = (2, 4, 4)
EXACT = {"min_region": 0.0, "cosine_eps": 1e-12}  # the plain cosine, every class compared


def t(a, grad: bool = False) -> torch.Tensor:
    return torch.tensor(np.asarray(a), dtype=torch.float32, requires_grad=grad)


def np_block_mean(x: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """Block means of ``x`` [..., *grid] down to ``size`` (integer factors per axis)."""
    grid = x.shape[-3:]
    shape = list(x.shape[:-3])
    for g, s in zip(grid, size, strict=True):
        shape += [s, g // s]
    n = len(x.shape[:-3])
    return x.reshape(shape).mean(axis=(n + 1, n + 3, n + 5))


def one_grid_inputs(seed: int, batch: int = 2):
    """Both layers on the label's grid (no resizing): 3 and 2 channels, labels of classes 0-2."""
    rng = np.random.default_rng(seed)
    fl = rng.normal(0.5, 1.0, (batch, 3, *GRID))
    fk = rng.normal(-0.5, 2.0, (batch, 2, *GRID))
    label = rng.choice([0, 1, 2], size=(batch, 1, *GRID))
    return fl, fk, label


def scipy_affinity(fl: np.ndarray, fk: np.ndarray, label: np.ndarray, c: int) -> np.ndarray:
    """Eq. 3 with SciPy's cosine on the voxels of class ``c`` (one grid: masks are 0/1)."""
    inside = label[:, 0] == c
    return np.array([[1.0 - scipy_cosine_distance(fl[:, m][inside], fk[:, n][inside]) for n in range(fk.shape[1])]
                     for m in range(fl.shape[1])])


def test_class_masks_are_the_one_hot_label_averaged_over_each_voxel():
    rng = np.random.default_rng(1)
    label = rng.choice([0, 1, 2, 3], size=(2, 1, 4, 8, 8))
    masks = class_masks(t(label), GRID, C)
    onehot = np.stack([(label[:, 0] == c).astype(float) for c in range(C)], axis=1)
    assert masks.shape == (2, C, *GRID)
    np.testing.assert_allclose(masks.numpy(), np_block_mean(onehot, GRID), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(masks.sum(dim=1), torch.ones(2, *GRID))
    same = class_masks(t(label)[:, 0], (4, 8, 8), C)  # no channel axis, no resizing
    np.testing.assert_array_equal(same.numpy(), onehot)


@pytest.mark.parametrize("seed", [0, 1])
def test_affinity_on_one_grid_is_scipys_cosine_over_the_class_voxels(seed):
    fl, fk, label = one_grid_inputs(seed)
    affinity, present = class_affinity_matrices(t(fl), t(fk), t(label), C, **EXACT)
    assert affinity.shape == (C, 3, 2) and present.tolist() == [True, True, True, False]
    for c in range(3):
        np.testing.assert_allclose(affinity[c].numpy(), scipy_affinity(fl, fk, label, c), rtol=1e-4, atol=1e-6)
    assert torch.equal(affinity[3], torch.zeros(3, 2))  # class 3 absent


def test_affinity_by_hand_and_blind_to_values_outside_the_class():
    label = np.zeros((1, 1, *GRID))
    label[0, 0, 0, :2, :2] = 1  # class 1: four voxels
    v = np.array([1.0, 2.0, 3.0, 4.0])
    fl = np.full((1, 1, *GRID), 7.0)  # outside class 1 the values are arbitrary
    fk = np.full((1, 3, *GRID), -5.0)
    fl[0, 0, 0, :2, :2] = v.reshape(2, 2)
    fk[0, 0, 0, :2, :2] = 3 * v.reshape(2, 2)  # same direction: cosine 1
    fk[0, 1, 0, :2, :2] = -v.reshape(2, 2)  # opposite: -1
    fk[0, 2, 0, :2, :2] = np.array([[4.0, -2.0], [0.0, 0.0]])  # orthogonal to v: 1*4 - 2*2 = 0
    affinity, _ = class_affinity_matrices(t(fl), t(fk), t(label), 2, **EXACT)
    np.testing.assert_allclose(affinity[1].numpy(), [[1.0, -1.0, 0.0]], atol=1e-6)


def test_affinity_does_not_depend_on_the_size_of_the_region():
    """The paper's stated aim for S^c: the same features over a region twice as large (the batch
    repeated) give the same affinity; the literal 1/S^c halves it."""
    fl, fk, label = one_grid_inputs(2)
    double = [np.concatenate([a, a]) for a in (fl, fk, label)]
    plain, _ = class_affinity_matrices(t(fl), t(fk), t(label), C, **EXACT)
    plain2, _ = class_affinity_matrices(*map(t, double), C, **EXACT)
    torch.testing.assert_close(plain2, plain, rtol=1e-5, atol=1e-6)
    # the default's norm floor changes a cosine over ~20 voxels by about 1 / (n + 1) only
    default, _ = class_affinity_matrices(t(fl), t(fk), t(label), C)
    default2, _ = class_affinity_matrices(*map(t, double), C)
    torch.testing.assert_close(default, plain, rtol=0.1, atol=0.01)
    torch.testing.assert_close(default2, plain, rtol=0.05, atol=0.01)
    literal, _ = class_affinity_matrices(t(fl), t(fk), t(label), C, "count", **EXACT)
    literal2, _ = class_affinity_matrices(*map(t, double), C, "count", **EXACT)
    torch.testing.assert_close(literal2[:3], literal[:3] / 2, rtol=1e-5, atol=1e-7)


def test_a_fine_layer_is_compared_on_the_coarse_grid():
    """A fine map that is a coarse map repeated 2x2x2, with labels constant on 2x2x2 blocks, gives
    the affinity of the coarse map itself: the finer layer is averaged onto the coarser grid."""
    fl, fk_coarse, label_coarse = one_grid_inputs(3)
    up = [np.repeat(np.repeat(np.repeat(a, 2, 2), 2, 3), 2, 4) for a in (fk_coarse, label_coarse)]
    fine, _ = class_affinity_matrices(t(fl), t(up[0]), t(up[1]), C, **EXACT)
    coarse, _ = class_affinity_matrices(t(fl), t(fk_coarse), t(label_coarse), C, **EXACT)
    torch.testing.assert_close(fine, coarse, rtol=1e-5, atol=1e-6)
    a_kl, _ = class_affinity_matrices(t(up[0]), t(fl), t(up[1]), C, **EXACT)  # layer order transposes
    torch.testing.assert_close(a_kl, fine.transpose(1, 2))


def test_eq4_by_hand_and_over_the_classes_present_in_both():
    """Modality a: both layer-k channels equal layer l's (A = [1, 1]); b: the second one negated
    (A = [1, -1]); per class 1/P sum (A^a - A^b)^2 = (0 + 4) / 2 = 2."""
    rng = np.random.default_rng(4)
    label = np.zeros((1, 1, *GRID))
    label[0, 0, 0] = 1
    label[0, 0, 1, :2] = 2
    v = rng.normal(size=(1, 1, *GRID)) + 3.0
    fa = (v, np.concatenate([v, v], 1))
    fb = (v, np.concatenate([v, -v], 1))
    got = csa_loss(tuple(map(t, fa)), t(label), tuple(map(t, fb)), t(label), 3, **EXACT)
    assert float(got) == pytest.approx(2.0, rel=1e-5)  # classes 0, 1, 2 each give 2
    label_b = label.copy()
    label_b[label_b == 2] = 0  # class 2 absent from b: averaged over classes 0 and 1 only, still 2
    got = csa_loss(tuple(map(t, fa)), t(label), tuple(map(t, fb)), t(label_b), 3, **EXACT)
    assert float(got) == pytest.approx(2.0, rel=1e-5)
    # mean over P entries: repeating every channel keeps the value (invariant to channel counts)
    wide = csa_loss(tuple(t(np.concatenate([f, f], 1)) for f in fa), t(label),
                    tuple(t(np.concatenate([f, f], 1)) for f in fb), t(label), 3, **EXACT)
    assert float(wide) == pytest.approx(2.0, rel=1e-5)


def test_csa_loss_is_symmetric_zero_for_identical_inputs_and_ignores_feature_scale():
    fl, fk, la = one_grid_inputs(5)
    gl, gk, lb = one_grid_inputs(6, batch=1)
    a, b = (t(fl), t(fk)), (t(gl), t(gk))
    torch.testing.assert_close(csa_loss(a, t(la), b, t(lb), C), csa_loss(b, t(lb), a, t(la), C))
    assert float(csa_loss(a, t(la), a, t(la), C)) == pytest.approx(0.0, abs=1e-12)
    assert float(csa_loss(a, t(la), b, t(lb), C)) > 1e-3
    scaled = (a[0] * 3.0, a[1] * 0.5)  # the exact cosine ignores a positive scale of the maps
    assert float(csa_loss(a, t(la), scaled, t(la), C, **EXACT)) == pytest.approx(0.0, abs=1e-10)


def fractional_class_inputs(seed: int, scale: float):
    """Class 3 covers one label voxel in each image: 1/8 of a voxel of layer l's 2x coarser grid."""
    rng = np.random.default_rng(seed)
    label = rng.choice([0, 1], size=(2, 1, 4, 8, 8))
    label[0, 0, 1, 2, 5] = 3
    label[1, 0, 2, 6, 1] = 3
    fl = rng.normal(size=(2, 3, *GRID)) * scale
    fk = rng.normal(size=(2, 2, 4, 8, 8)) * scale
    return (t(fl, True), t(fk, True)), t(label)


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3])
def test_a_class_covering_a_fraction_of_one_coarse_voxel_keeps_the_term_in_0_4(scale):
    """Stated range: every affinity in [-1, 1] and L_CSA in [0, 4], for any region (even with the
    size guard off) and any feature scale; with the guard on, the sub-voxel class is not compared."""
    for seed in range(3):
        fa, la = fractional_class_inputs(seed, scale)
        fb, lb = fractional_class_inputs(seed + 10, scale)
        for kwargs in ({}, {"min_region": 0.0}, EXACT):
            affinity, present = class_affinity_matrices(*fa, la, C, **kwargs)
            assert float(affinity.detach().abs().max()) <= 1.0 + 1e-6
            assert bool(present[3]) == (kwargs != {})  # the default guard leaves the sub-voxel class out
            loss = csa_loss(fa, la, fb, lb, C, **kwargs)
            assert 0.0 <= float(loss.detach()) <= 4.0
            grads = torch.autograd.grad(loss, [*fa, *fb], allow_unused=True)
            assert all(g is None or torch.isfinite(g).all() for g in grads)
    # The literal reading (cosine / S^c, S^c = 2/8 voxel here) multiplies the cosines by 4.
    literal, _ = class_affinity_matrices(*fa, la, C, "count", **EXACT)
    exact, _ = class_affinity_matrices(*fa, la, C, **EXACT)
    torch.testing.assert_close(literal[3], 4 * exact[3])
    assert float(literal[3].detach().abs().max()) > 1.0


def test_gradients_reach_both_modalities_features_inside_the_shared_regions_only():
    fl, fk, la = one_grid_inputs(7)
    gl, gk, lb = one_grid_inputs(8)
    lb[lb == 2] = 1  # class 2 absent from modality b
    a, b = (t(fl, True), t(fk, True)), (t(gl, True), t(gk, True))
    csa_loss(a, t(la), b, t(lb), C).backward()
    for f in (*a, *b):
        assert f.grad is not None and torch.isfinite(f.grad).all() and f.grad.abs().sum() > 0
    inside = torch.from_numpy(la == 2).expand_as(a[1].grad)
    assert torch.equal(a[1].grad[inside], torch.zeros_like(a[1].grad[inside]))


def test_no_shared_class_gives_zero_with_a_graph():
    fl, fk, la = one_grid_inputs(9)
    la[:] = 2
    lb = np.full_like(la, 1)
    a = (t(fl, True), t(fk, True))
    loss = csa_loss(a, t(la), (t(fl), t(fk)), t(lb), C)
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert torch.equal(a[0].grad, torch.zeros_like(a[0]))


def test_zero_channel_has_zero_affinity_and_half_precision_is_computed_in_float32():
    fl, fk, label = one_grid_inputs(10)
    fl[:, 1] = 0.0
    affinity, _ = class_affinity_matrices(t(fl), t(fk), t(label), C)
    assert torch.isfinite(affinity).all() and torch.equal(affinity[:, 1], torch.zeros(C, 2))
    half, _ = class_affinity_matrices(t(fl).to(torch.bfloat16), t(fk).to(torch.bfloat16), t(label), C)
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, affinity, rtol=5e-2, atol=5e-2)


def test_different_channel_counts_and_unknown_region_norm_are_refused():
    fl, fk, label = one_grid_inputs(11)
    a = (t(fl), t(fk))
    with pytest.raises(ValueError, match="channel"):
        csa_loss(a, t(label), (t(fl)[:, :2], t(fk)), t(label), C)
    with pytest.raises(ValueError, match="region_norm"):
        csa_loss(a, t(label), a, t(label), C, "area")
