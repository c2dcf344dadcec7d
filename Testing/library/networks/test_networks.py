"""Network registry, U-Net with shared convolutions and per-modality norms, 2D / 2.5D slice-wise wrappers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from MultiModalSegLib.networks import NETWORKS, ModalityNorm, SliceWise, UNet, add_modality, build_network

torch.set_num_threads(1)

SMALL = {"features": (4, 8), "out_channels": 3}


def small_unet(norm: str, seed: int = 0, **params) -> UNet:
    torch.manual_seed(seed)
    return UNet(spatial_dims=3, norm=norm, **{**SMALL, **params})


def conv_parameters(net: nn.Module) -> list[torch.Tensor]:
    convs = (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)
    return [p for m in net.modules() if isinstance(m, convs) for p in m.parameters(recurse=False)]


def modality_norms(net: nn.Module) -> list[ModalityNorm]:
    return [m for m in net.modules() if isinstance(m, ModalityNorm)]


def test_registry_lists_the_three_networks_and_rejects_unknown_names():
    assert {"unet3d", "unet2d", "unet2.5d"} <= set(NETWORKS)
    with pytest.raises(KeyError, match="unet3d"):
        build_network("vnet", **SMALL)


def test_modality_batch_unet_names_norm_sets_only_on_norm_layers():
    net = small_unet("modality_batch")
    names = [n for n, _ in net.named_parameters()]
    norm_names = [n for n in names if ".norms." in n]
    assert norm_names and any(".norms.CT." in n for n in norm_names) and any(".norms.MR." in n for n in norm_names)
    norm_param_ids = {id(p) for m in modality_norms(net) for p in m.parameters()}
    for name, p in net.named_parameters():
        assert (id(p) in norm_param_ids) == (".norms." in name), name
    # exactly one CT and one MR copy of every norm parameter
    ct = sorted(n.replace(".norms.CT.", ".") for n in norm_names if ".norms.CT." in n)
    mr = sorted(n.replace(".norms.MR.", ".") for n in norm_names if ".norms.MR." in n)
    assert ct == mr and len(ct) + len(mr) == len(norm_names)


def test_convolutions_are_not_duplicated_per_modality():
    shared = small_unet("modality_batch")
    plain = small_unet("batch")
    conv_shared, conv_plain = conv_parameters(shared), conv_parameters(plain)
    assert len(conv_shared) == len(conv_plain)
    assert sum(p.numel() for p in conv_shared) == sum(p.numel() for p in conv_plain)
    n_shared = sum(p.numel() for p in shared.parameters())
    n_plain = sum(p.numel() for p in plain.parameters())
    plain_norm = sum(
        p.numel() for m in plain.modules() if isinstance(m, nn.BatchNorm3d) for p in m.parameters()
    )
    assert plain_norm > 0
    assert n_shared - n_plain == plain_norm  # one extra norm set, nothing else


def test_one_conv_tensor_receives_gradients_from_both_modalities():
    net = small_unet("modality_batch").train()
    x = torch.rand(2, 1, 8, 8, 8)
    first_conv = conv_parameters(net)[0]
    ct_weights = [m.norms["CT"].weight for m in modality_norms(net)]
    mr_weights = [m.norms["MR"].weight for m in modality_norms(net)]
    for modality, used, unused in (("CT", ct_weights, mr_weights), ("MR", mr_weights, ct_weights)):
        net.zero_grad(set_to_none=True)
        (net(x, modality) * torch.randn(2, 3, 8, 8, 8)).sum().backward()
        assert first_conv.grad is not None and first_conv.grad.abs().sum() > 0, modality
        assert all(w.grad is not None for w in used), modality
        assert all(w.grad is None for w in unused), modality


def test_training_on_ct_leaves_mr_running_statistics_unchanged():
    net = small_unet("modality_batch").train()
    before = {k: v.clone() for k, v in net.state_dict().items() if ".norms.MR." in k}
    net(torch.rand(2, 1, 8, 8, 8) * 4 + 1, "CT")
    after = net.state_dict()
    assert before
    for key, value in before.items():
        assert torch.equal(after[key], value), key
    changed = [k for k in after if ".norms.CT." in k and k.endswith("running_mean") and after[k].abs().sum() > 0]
    assert changed


def test_calling_a_modality_network_without_modality_fails_clearly():
    net = small_unet("modality_batch")
    with pytest.raises(RuntimeError, match="modality"):
        net(torch.rand(1, 1, 8, 8, 8))


def test_ct_and_mr_outputs_differ_once_the_norm_sets_differ():
    net = small_unet("modality_batch").eval()
    x = torch.rand(1, 1, 8, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(net(x, "CT"), net(x, "MR"))  # identical initial sets
        for m in modality_norms(net):
            m.norms["MR"].weight.mul_(2.0)
            m.norms["MR"].bias.add_(0.3)
        assert not torch.allclose(net(x, "CT"), net(x, "MR"), atol=1e-4)


def test_add_modality_to_a_network_copies_the_source_set():
    net = small_unet("modality_batch").eval()
    with torch.no_grad():
        for i, m in enumerate(modality_norms(net)):
            m.norms["MR"].weight.uniform_(0.5, 1.5)
            m.norms["MR"].running_mean.fill_(0.1 * (i + 1))
    add_modality(net, "PET", copy_from="MR")
    assert all(m.modalities == ["CT", "MR", "PET"] for m in modality_norms(net))
    x = torch.rand(1, 1, 8, 8, 8)
    with torch.no_grad():
        pet, mr, ct = net(x, "PET"), net(x, "MR"), net(x, "CT")
    torch.testing.assert_close(pet, mr)
    assert not torch.allclose(pet, ct, atol=1e-4)


def test_shared_norm_ignores_the_modality():
    net = small_unet("batch").eval()
    x = torch.rand(1, 1, 8, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(net(x, "CT"), net(x, "MR"))
        torch.testing.assert_close(net(x, "CT"), net(x))


@pytest.mark.parametrize("name", ["unet3d", "unet2d", "unet2.5d"])
@pytest.mark.parametrize("norm", ["batch", "instance", "modality_batch", "modality_instance"])
def test_every_network_maps_a_volume_to_per_class_logits(name, norm):
    torch.manual_seed(0)
    net = build_network(name, norm=norm, **SMALL)
    x = torch.rand(2, 1, 6, 8, 12) if name != "unet3d" else torch.rand(2, 1, 4, 8, 12)
    out = net(x, "MR")
    assert out.shape == (2, 3, *x.shape[2:])
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for n, p in net.named_parameters() if ".norms.CT." not in n)


def test_slice_networks_are_slicewise_wrappers():
    n2 = build_network("unet2d", **SMALL)
    n25 = build_network("unet2.5d", context=2, **SMALL)
    assert isinstance(n2, SliceWise) and n2.context == 0 and n2.net.in_channels == 1
    assert isinstance(n25, SliceWise) and n25.context == 2 and n25.net.in_channels == 5
    assert n2.net.spatial_dims == 2 and n25.divisor == 2


def test_slice_stack_holds_neighbours_with_replicated_edges():
    wrapper = SliceWise(nn.Identity(), context=1)
    x = torch.arange(2 * 4 * 2 * 3, dtype=torch.float32).reshape(2, 1, 4, 2, 3)
    stack = wrapper._slices(x)
    assert stack.shape == (2 * 4, 3, 2, 3)
    for b in range(2):
        for k in range(4):
            expected = [x[b, 0, min(max(j, 0), 3)] for j in (k - 1, k, k + 1)]
            torch.testing.assert_close(stack[b * 4 + k], torch.stack(expected))


def slice_sensitivity(name: str) -> torch.Tensor:
    """Max change of the output at each slice after changing input slice 3 (of 8)."""
    torch.manual_seed(0)
    net = build_network(name, norm="instance", **SMALL).eval()
    x = torch.rand(1, 1, 8, 8, 8)
    y = x.clone()
    y[:, :, 3] = torch.rand(8, 8) + 1.0
    with torch.no_grad():
        diff = (net(x, "CT") - net(y, "CT")).abs()
    return diff.amax(dim=(0, 1, 3, 4))


def test_25d_network_uses_the_neighbouring_slices():
    change = slice_sensitivity("unet2.5d")
    assert change[2] > 1e-4 and change[3] > 1e-4 and change[4] > 1e-4
    assert torch.all(change[[0, 1, 5, 6, 7]] == 0)


def test_2d_network_sees_one_slice_only():
    change = slice_sensitivity("unet2d")
    assert change[3] > 1e-4
    assert torch.all(change[[0, 1, 2, 4, 5, 6, 7]] == 0)


def test_slicewise_features_come_back_as_volumes():
    torch.manual_seed(0)
    net = build_network("unet2.5d", norm="instance", **SMALL).eval()
    feats = net.features_dict(torch.rand(2, 1, 5, 8, 8), "CT")
    assert feats["logits"].shape == (2, 3, 5, 8, 8)
    assert [t.shape for t in feats["encoder"]] == [(2, 4, 5, 8, 8), (2, 8, 5, 4, 4)]
    assert [t.shape for t in feats["decoder"]] == [(2, 4, 5, 8, 8)]
