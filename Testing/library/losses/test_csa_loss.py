"""CSA's class-specific affinity loss (Eq. 2-4) against an independent NumPy computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from MultiModalSegLib.losses.class_affinity import class_affinity_matrices, class_masks, csa_loss

torch.set_num_threads(1)

C = 4
LABEL_GRID = (4, 8, 8)
GRID_L = (2, 4, 4)  # layer l: 3 channels at half resolution
GRID_K = (4, 8, 8)  # layer k: 2 channels at full resolution


def np_area(x: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """Block means of ``x`` [..., *grid] down to ``size`` (integer factors per axis)."""
    grid = x.shape[-3:]
    factors = [g // s for g, s in zip(grid, size, strict=True)]
    shape = list(x.shape[:-3])
    for s, f in zip(size, factors, strict=True):
        shape += [s, f]
    n = len(x.shape[:-3])
    return x.reshape(shape).mean(axis=(n + 1, n + 3, n + 5))


def np_onehot(label: np.ndarray, n_classes: int) -> np.ndarray:
    lab = label[:, 0]
    return np.stack([(lab == c).astype(float) for c in range(n_classes)], axis=1)  # B, C, *grid


def np_affinity(fl: np.ndarray, fk: np.ndarray, label: np.ndarray, n_classes: int, region_norm: str):
    """Loops over classes and channel pairs: Eq. 2 masks, Eq. 3 cosine / S^c."""
    onehot = np_onehot(label, n_classes)
    grid_l, grid_k = fl.shape[2:], fk.shape[2:]
    coarse = grid_l if np.prod(grid_l) <= np.prod(grid_k) else grid_k
    affinity = np.zeros((n_classes, fl.shape[1], fk.shape[1]))
    present = np.zeros(n_classes, dtype=bool)
    for c in range(n_classes):
        mask_l = np_area(onehot[:, c], grid_l)  # B, *grid_l
        mask_k = np_area(onehot[:, c], grid_k)
        region = np_area(onehot[:, c], coarse).sum()
        present[c] = onehot[:, c].sum() > 0
        if not present[c]:
            continue
        size = {"count": region, "fraction": region / (fl.shape[0] * np.prod(coarse)), "none": 1.0}[region_norm]
        for m in range(fl.shape[1]):
            u = np_area(fl[:, m] * mask_l, coarse).ravel()
            for n in range(fk.shape[1]):
                v = np_area(fk[:, n] * mask_k, coarse).ravel()
                denominator = np.linalg.norm(u) * np.linalg.norm(v)
                cosine = float(u @ v / denominator) if denominator > 0 else 0.0
                affinity[c, m, n] = cosine / size
    return affinity, present


def np_csa(fa, la, fb, lb, n_classes, region_norm="count") -> float:
    aa, pa = np_affinity(*fa, la, n_classes, region_norm)
    ab, pb = np_affinity(*fb, lb, n_classes, region_norm)
    terms = [np.sum((aa[c] - ab[c]) ** 2) / aa[c].size for c in range(n_classes) if pa[c] and pb[c]]
    return float(np.mean(terms)) if terms else 0.0


def make_modality(rng: np.random.Generator, classes: list[int], batch: int = 2, shift: float = 0.0):
    fl = rng.normal(shift, 1.0, (batch, 3, *GRID_L))
    fk = rng.normal(-shift, 2.0, (batch, 2, *GRID_K))
    label = rng.choice(classes, size=(batch, 1, *LABEL_GRID))
    return (fl, fk), label


def make_inputs(seed: int = 0):
    """Modality a has no voxel of class 3, modality b none of class 2 (b has one image only)."""
    rng = np.random.default_rng(seed)
    fa, la = make_modality(rng, [0, 1, 2])
    fb, lb = make_modality(rng, [0, 1, 3], batch=1, shift=0.5)
    return fa, la, fb, lb


def t(a: np.ndarray, grad: bool = False) -> torch.Tensor:
    return torch.tensor(a, dtype=torch.float32, requires_grad=grad)


def torch_inputs(fa, la, fb, lb, grad: bool = False):
    return (t(fa[0], grad), t(fa[1], grad)), t(la), (t(fb[0], grad), t(fb[1], grad)), t(lb)


def test_class_masks_are_the_one_hot_label_averaged_over_each_voxel():
    _, label, _, _ = make_inputs(1)
    masks = class_masks(t(label), GRID_L, C)
    assert masks.shape == (2, C, *GRID_L)
    np.testing.assert_allclose(masks.numpy(), np_area(np_onehot(label, C), GRID_L), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(masks.sum(dim=1), torch.ones(2, *GRID_L))
    same = class_masks(t(label)[:, 0], LABEL_GRID, C)  # no channel axis, no resizing
    np.testing.assert_array_equal(same.numpy(), np_onehot(label, C))


@pytest.mark.parametrize("region_norm", ["count", "fraction", "none"])
def test_affinity_matrices_match_numpy(region_norm):
    (fl, fk), label, _, _ = make_inputs(2)
    affinity, present = class_affinity_matrices(t(fl), t(fk), t(label), C, region_norm)
    expected, present_np = np_affinity(fl, fk, label, C, region_norm)
    assert affinity.shape == (C, 3, 2)  # channels of layer l by channels of layer k
    np.testing.assert_array_equal(present.numpy(), present_np)
    np.testing.assert_allclose(affinity.numpy(), expected, rtol=1e-4, atol=1e-7)
    assert torch.equal(affinity[3], torch.zeros(3, 2))  # class 3 absent


def test_affinity_layer_order_transposes_the_matrix_and_grids_may_differ_in_one_axis():
    rng = np.random.default_rng(3)
    fl = rng.normal(size=(2, 3, 4, 4, 4))  # a slice-wise network keeps every slice: Z is not pooled
    fk = rng.normal(size=(2, 2, 4, 8, 8))
    label = rng.choice([0, 1, 2, 3], size=(2, 1, 4, 8, 8))
    a_lk, _ = class_affinity_matrices(t(fl), t(fk), t(label), C)
    a_kl, _ = class_affinity_matrices(t(fk), t(fl), t(label), C)
    torch.testing.assert_close(a_kl, a_lk.transpose(1, 2))
    np.testing.assert_allclose(a_lk.numpy(), np_affinity(fl, fk, label, C, "count")[0], rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("region_norm", ["count", "fraction", "none"])
def test_csa_loss_matches_numpy(seed, region_norm):
    arrays = make_inputs(seed)
    got = csa_loss(*torch_inputs(*arrays), n_classes=C, region_norm=region_norm)
    expected = np_csa(*arrays, C, region_norm)
    assert got.dim() == 0 and expected > 0
    assert float(got) == pytest.approx(expected, rel=1e-4, abs=1e-12)


def test_csa_loss_averages_over_the_classes_present_in_both_modalities():
    fa, la, fb, lb = make_inputs(4)
    aa, _ = np_affinity(*fa, la, C, "none")
    ab, _ = np_affinity(*fb, lb, C, "none")
    shared = np.mean([np.mean((aa[c] - ab[c]) ** 2) for c in (0, 1)])
    every_class = np.mean([np.mean((aa[c] - ab[c]) ** 2) for c in range(C)])  # absent ones as zero matrices
    assert abs(shared - every_class) > 1e-4
    got = float(csa_loss(*torch_inputs(fa, la, fb, lb), n_classes=C, region_norm="none"))
    assert got == pytest.approx(shared, rel=1e-4)


def test_csa_loss_is_symmetric_in_the_two_modalities():
    fa, la, fb, lb = torch_inputs(*make_inputs(5))
    torch.testing.assert_close(csa_loss(fa, la, fb, lb, C), csa_loss(fb, lb, fa, la, C))


def test_csa_loss_is_zero_for_identical_features_and_masks_and_positive_otherwise():
    fa, la, fb, lb = torch_inputs(*make_inputs(6))
    for norm in ("count", "none"):
        assert float(csa_loss(fa, la, fa, la, C, norm)) == pytest.approx(0.0, abs=1e-12)
        assert float(csa_loss(fa, la, fb, lb, C, norm)) > 0
    # The cosine ignores a positive scale of the feature maps; the region normalisation does not
    # depend on the features at all.
    scaled = (fa[0] * 3.0, fa[1] * 0.5)
    assert float(csa_loss(fa, la, scaled, la, C, "none")) == pytest.approx(0.0, abs=1e-10)


def test_csa_loss_gradients_reach_both_modalities_features_inside_the_shared_regions_only():
    arrays = make_inputs(7)
    fa, la, fb, lb = torch_inputs(*arrays, grad=True)
    csa_loss(fa, la, fb, lb, C, "none").backward()
    for (fl, fk), label, absent in ((fa, la, 2), (fb, lb, 3)):
        for f in (fl, fk):
            assert f.grad is not None and torch.isfinite(f.grad).all() and f.grad.abs().sum() > 0
        # Layer k is at label resolution: a voxel of a class the other modality lacks gets no gradient.
        inside = (label == absent).expand_as(fk.grad)
        assert torch.equal(fk.grad[inside], torch.zeros_like(fk.grad[inside]))


def test_no_shared_class_gives_zero_with_a_graph():
    fa, la, fb, lb = make_inputs(8)
    la[:] = 2
    lb[:] = 3
    ta, tla, tb, tlb = torch_inputs(fa, la, fb, lb, grad=True)
    loss = csa_loss(ta, tla, tb, tlb, C)
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert torch.equal(ta[0].grad, torch.zeros_like(ta[0]))


def test_zero_channel_has_zero_cosine_and_half_precision_is_computed_in_float32():
    (fl, fk), label, _, _ = make_inputs(9)
    fl[:, 1] = 0.0
    affinity, _ = class_affinity_matrices(t(fl), t(fk), t(label), C, "none")
    assert torch.isfinite(affinity).all() and torch.equal(affinity[:, 1], torch.zeros(C, 2))
    half, _ = class_affinity_matrices(t(fl).to(torch.bfloat16), t(fk).to(torch.bfloat16), t(label), C, "none")
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, affinity, rtol=5e-2, atol=5e-2)


def test_different_channel_counts_and_unknown_region_norm_are_refused():
    fa, la, fb, lb = torch_inputs(*make_inputs(10))
    with pytest.raises(ValueError, match="channel"):
        csa_loss(fa, la, (fb[0][:, :2], fb[1]), lb, C)
    with pytest.raises(ValueError, match="region_norm"):
        csa_loss(fa, la, fb, lb, C, "area")
