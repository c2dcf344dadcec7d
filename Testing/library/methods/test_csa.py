"""CSA method: Eq. 5's total loss and weights, the layers the affinity reads, what it shares."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from torch import nn

from MultiModalSegLib.errors import ConfigError
from MultiModalSegLib.losses import as_target
from MultiModalSegLib.losses.class_affinity import csa_loss
from MultiModalSegLib.methods import build_inference_network, build_method
from MultiModalSegLib.methods.csa import CSA
from MultiModalSegLib.networks import ModalityNorm

torch.set_num_threads(1)

N_CLASSES = 3
MODALITIES = ["CT", "MR"]
NET = {"name": "unet3d", "params": {"features": [4, 8, 16]}}


def make(network: dict = NET, seed: int = 0, **params) -> CSA:
    torch.manual_seed(seed)
    return build_method("csa", network, MODALITIES, N_CLASSES, **params)


def batches(seed: int = 0, shape: tuple[int, int, int] = (4, 8, 8)) -> dict[str, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for i, m in enumerate(MODALITIES):
        label = torch.randint(0, N_CLASSES, (2, 1, *shape), generator=g).float()
        out[m] = {"image": torch.rand(2, 1, *shape, generator=g) + 0.5 * label + i, "label": label}
    return out


def test_defaults_are_the_papers():
    method = make()
    assert (method.alpha, method.beta, method.lam) == (1.0, 1.0, 0.5)
    assert method.layers == [("decoder", 0), ("decoder", 1)]
    assert method.region_norm == "none"  # the size-invariant cosine (see losses.class_affinity)
    assert method.min_region == 1.0
    assert method.network_spec["params"]["norm"] == "modality_batch"
    norms = [m for m in method.modules() if isinstance(m, ModalityNorm)]
    assert norms and all(n.modalities == MODALITIES for n in norms)


@pytest.mark.parametrize(("alpha", "beta", "lam"), [(1.0, 1.0, 0.5), (0.3, 2.0, 7.0)])
def test_total_is_alpha_dice_plus_beta_ce_plus_lambda_csa(alpha, beta, lam):
    method = make(alpha=alpha, beta=beta, lam=lam, region_norm="none").train()
    data = batches(1)
    out = method.training_step(data)
    assert {"seg_CT", "seg_MR", "csa", "loss"} <= set(out)
    dice = DiceLoss(include_background=False, to_onehot_y=True, softmax=True, batch=True)
    expected_seg = {}
    with torch.no_grad():  # train-mode BatchNorm: the same batch gives the same outputs again
        maps = {m: method.net.features_dict(data[m]["image"], m) for m in MODALITIES}
        for m in MODALITIES:
            logits, target = maps[m]["logits"], as_target(data[m]["label"])
            ce = F.cross_entropy(logits, target[:, 0])
            expected_seg[m] = alpha * dice(logits, target) + beta * ce
        csa = csa_loss(
            (maps["CT"]["decoder"][0], maps["CT"]["decoder"][1]), data["CT"]["label"],
            (maps["MR"]["decoder"][0], maps["MR"]["decoder"][1]), data["MR"]["label"],
            N_CLASSES, "none",
        )
    for m in MODALITIES:
        torch.testing.assert_close(out[f"seg_{m}"].detach(), expected_seg[m], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(out["csa"].detach(), csa, rtol=1e-4, atol=1e-9)
    assert float(csa) > 1e-4
    torch.testing.assert_close(out["loss"], out["seg_CT"] + out["seg_MR"] + lam * out["csa"])


def make4(seed: int, **params) -> CSA:
    """A CSA model with four classes (background, a large one, two tiny ones)."""
    torch.manual_seed(seed)
    return build_method("csa", NET, MODALITIES, 4, **params)


def small_class_batches(seed: int) -> dict[str, dict[str, torch.Tensor]]:
    """Four classes: 1 a block, 2 and 3 one label voxel per image each, i.e. 1/8 of a voxel of the
    compared decoder.0 grid (half resolution): the case that blew the literal Eq. 3 up."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for i, m in enumerate(MODALITIES):
        label = torch.zeros(2, 1, 8, 16, 16)
        label[:, :, 2:6, 4:12, 4:12] = 1
        for b in range(2):
            z, y, x = (int(v) for v in torch.randint(0, 6, (3,), generator=g))
            label[b, 0, z, y, x] = 2
            label[b, 0, z + 1, y + 8, x + 8] = 3
        out[m] = {"image": torch.rand(2, 1, 8, 16, 16, generator=g) + 0.5 * label + i, "label": label}
    return out


def gradient_ratio(method: CSA, data: dict) -> tuple[float, float, float]:
    """(L_CSA, summed segmentation loss, |grad lambda L_CSA| / |grad L_seg| on the shared kernels)."""
    out = method.train().training_step(data)
    kernels = [p for name, p in method.net.named_parameters() if "conv" in name and "head" not in name]
    seg = out["seg_CT"] + out["seg_MR"]
    g_seg = torch.autograd.grad(seg, kernels, retain_graph=True, allow_unused=True)
    g_csa = torch.autograd.grad(method.lam * out["csa"], kernels, allow_unused=True)

    def norm(grads) -> float:
        return float(sum(g.pow(2).sum() for g in grads if g is not None)) ** 0.5

    return float(out["csa"].detach()), float(seg.detach()), norm(g_csa) / norm(g_seg)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_csa_term_stays_below_the_segmentation_loss_when_a_class_covers_a_fraction_of_a_voxel(seed):
    csa, seg, ratio = gradient_ratio(make4(seed), small_class_batches(seed))
    assert 0.0 <= csa <= 4.0 and 0.5 * csa < seg
    assert ratio < 1.0, f"lambda L_CSA moves the shared kernels {ratio:.2f}x as much as L_seg"
    # Even with every class compared (no size guard), the term stays in its range and its gradient
    # of the order of the segmentation loss's.
    csa, seg, ratio = gradient_ratio(make4(seed, min_region=0.0), small_class_batches(seed))
    assert 0.0 <= csa <= 4.0 and ratio < 1.0
    # Dividing by the region's relative size instead (a literal reading) makes the term dominate.
    _, _, literal = gradient_ratio(make4(seed, region_norm="fraction", min_region=0.0), small_class_batches(seed))
    assert literal > 2.0


def test_configured_layers_are_the_ones_compared():
    method = make(layers=["encoder.2", "decoder.-1"], region_norm="none").train()
    assert method.layers == [("encoder", 2), ("decoder", 1)]
    data = batches(2)
    out = method.training_step(data)
    with torch.no_grad():
        maps = {m: method.net.features_dict(data[m]["image"], m) for m in MODALITIES}
        expected = csa_loss(
            (maps["CT"]["encoder"][2], maps["CT"]["decoder"][1]), data["CT"]["label"],
            (maps["MR"]["encoder"][2], maps["MR"]["decoder"][1]), data["MR"]["label"],
            N_CLASSES, "none",
        )
    torch.testing.assert_close(out["csa"].detach(), expected, rtol=1e-4, atol=1e-9)


def test_csa_gradients_reach_the_shared_convolutions_and_both_norm_sets_not_the_head():
    method = make(region_norm="none").train()
    method.training_step(batches(3))["csa"].backward()
    net = method.inference_network()
    first_conv = net.encoder[0].conv1.conv.weight
    assert first_conv.grad is not None and first_conv.grad.abs().sum() > 0
    norms = [n for n in net.modules() if isinstance(n, ModalityNorm)]
    for m in MODALITIES:
        assert any(n.norms[m].weight.grad is not None and n.norms[m].weight.grad.abs().sum() > 0 for n in norms), m
    head = net.head.conv.conv.weight  # after the compared layers: the affinity term cannot reach it
    assert head.grad is None or float(head.grad.abs().sum()) == 0.0
    # The literal size normalisation (cosine / S^c) gives a small term that still trains the kernels.
    method = make(region_norm="count").train()
    method.training_step(batches(3))["csa"].backward()
    assert method.inference_network().encoder[0].conv1.conv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("network", ["unet2d", "unet2.5d"])
def test_slice_wise_networks_give_a_csa_term_that_backpropagates(network):
    method = make({"name": network, "params": {"features": [4, 8]}}, layers=["encoder.1", "decoder.0"], region_norm="none")
    out = method.train().training_step(batches(4))
    assert torch.isfinite(out["loss"]) and float(out["csa"].detach()) > 0
    out["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in method.parameters() if p.grad is not None)


def test_a_batch_without_a_shared_class_gives_a_zero_term():
    data = batches(5)
    data["CT"]["label"].fill_(1)
    data["MR"]["label"].fill_(2)
    out = make().train().training_step(data)
    assert float(out["csa"].detach()) == 0.0
    torch.testing.assert_close(out["loss"], out["seg_CT"] + out["seg_MR"])


def test_bad_configurations_are_config_errors():
    for bad in (["decoder.2", "decoder.1"], ["middle.0", "decoder.0"], ["decoder.x", "decoder.0"], ["decoder.0"], "decoder.0"):
        with pytest.raises(ConfigError, match="layer"):
            make(layers=bad)
    with pytest.raises(ConfigError, match="same layer"):
        make(layers=["decoder.1", "decoder.-1"])
    with pytest.raises(ConfigError, match="region_norm"):
        make(region_norm="area")
    with pytest.raises(ConfigError, match="min_region"):
        make(min_region=-1)
    with pytest.raises(ConfigError, match="modality"):
        make({"name": "unet3d", "params": {"features": [4, 8, 16], "norm": "batch"}})


def test_a_network_without_unet_feature_maps_is_a_config_error(monkeypatch):
    class Plain(nn.Module):
        def forward(self, x, modality=None):
            return x

    monkeypatch.setattr(CSA, "build_inference_network", classmethod(lambda cls, spec, modalities: Plain()))
    with pytest.raises(ConfigError, match="unet3d"):
        make()


@pytest.mark.parametrize("network", ["unet3d", "unet2.5d"])
def test_exported_network_is_rebuilt_from_metadata_and_segments_one_modality(network):
    method = make({"name": network, "params": {"features": [4, 8, 16]}})
    metadata = {"method": "csa", "network": method.network_spec, "modalities": {"CT": {}, "MR": {}}}
    rebuilt = build_inference_network(metadata).eval()
    trained = method.inference_network().eval()
    rebuilt.load_state_dict(trained.state_dict(), strict=True)
    x = torch.rand(1, 1, 4, 8, 8)
    with torch.no_grad():
        for m in MODALITIES:
            torch.testing.assert_close(rebuilt(x, m), trained(x, m))
            assert rebuilt(x, m).shape == (1, N_CLASSES, 4, 8, 8)
