"""Modality-specific normalisation: one statistics and affine set per modality, MONAI factory entries."""

from __future__ import annotations

import pytest
import torch
from monai.networks.layers.factories import Norm
from monai.networks.layers.utils import get_norm_layer
from torch import nn

from MultiModalSegLib.networks import ModalityNorm, add_modality, set_modality

torch.set_num_threads(1)


def make_layer(base: str = "batch", dims: int = 3, channels: int = 3) -> ModalityNorm:
    torch.manual_seed(0)
    return ModalityNorm(channels, modalities=("CT", "MR"), base=base, spatial_dims=dims)


def test_each_modality_has_its_own_layer_of_the_base_type():
    layer = make_layer()
    assert layer.modalities == ["CT", "MR"]
    assert isinstance(layer.norms["CT"], nn.BatchNorm3d) and isinstance(layer.norms["MR"], nn.BatchNorm3d)
    assert layer.norms["CT"] is not layer.norms["MR"]
    inst = make_layer("instance", dims=2)
    assert isinstance(inst.norms["CT"], nn.InstanceNorm2d)
    assert inst.norms["MR"].weight is not None  # affine by default


def test_training_ct_updates_only_ct_running_statistics():
    layer = make_layer().train()
    x = torch.randn(2, 3, 4, 4, 4) * 3.0 + 5.0
    mr_before = {k: v.clone() for k, v in layer.norms["MR"].state_dict().items()}
    set_modality(layer, "CT")
    for _ in range(3):
        layer(x)
    ct = layer.norms["CT"]
    assert int(ct.num_batches_tracked) == 3
    assert not torch.allclose(ct.running_mean, torch.zeros(3))
    assert not torch.allclose(ct.running_var, torch.ones(3))
    for key, value in layer.norms["MR"].state_dict().items():
        assert torch.equal(value, mr_before[key]), key


def test_affine_parameters_are_separate_tensors_and_get_separate_gradients():
    layer = make_layer().train()
    ct, mr = layer.norms["CT"], layer.norms["MR"]
    assert ct.weight.data_ptr() != mr.weight.data_ptr() and ct.bias.data_ptr() != mr.bias.data_ptr()
    set_modality(layer, "MR")
    (layer(torch.randn(2, 3, 4, 4, 4)) * torch.randn(2, 3, 4, 4, 4)).sum().backward()
    assert mr.weight.grad is not None and mr.weight.grad.abs().sum() > 0
    assert ct.weight.grad is None and ct.bias.grad is None


def test_eval_mode_uses_the_active_modality_statistics():
    layer = make_layer().eval()
    layer.norms["CT"].running_mean.fill_(2.0)
    layer.norms["MR"].running_mean.fill_(-2.0)
    x = torch.zeros(1, 3, 2, 2, 2)
    set_modality(layer, "CT")
    out_ct = layer(x)
    set_modality(layer, "MR")
    out_mr = layer(x)
    eps = layer.norms["CT"].eps
    torch.testing.assert_close(out_ct, torch.full_like(x, -2.0 / (1 + eps) ** 0.5))
    torch.testing.assert_close(out_mr, torch.full_like(x, 2.0 / (1 + eps) ** 0.5))


def test_calling_without_a_modality_raises_a_clear_error():
    layer = make_layer()
    with pytest.raises(RuntimeError, match="without a modality"):
        layer(torch.randn(2, 3, 4, 4, 4))
    set_modality(layer, "PET")
    with pytest.raises(KeyError, match="PET"):
        layer(torch.randn(2, 3, 4, 4, 4))
    set_modality(layer, None)
    with pytest.raises(RuntimeError, match="net\\(image, modality\\)"):
        layer(torch.randn(2, 3, 4, 4, 4))


def test_set_modality_reaches_every_nested_layer():
    model = nn.Sequential(make_layer(), nn.Sequential(nn.Identity(), make_layer()))
    set_modality(model, "MR")
    assert [m.active for m in model.modules() if isinstance(m, ModalityNorm)] == ["MR", "MR"]


def test_add_modality_copies_a_set_that_then_behaves_like_the_source():
    layer = make_layer()
    with torch.no_grad():
        layer.norms["MR"].weight.copy_(torch.tensor([0.5, 2.0, -1.0]))
        layer.norms["MR"].bias.copy_(torch.tensor([0.1, -0.3, 0.7]))
        layer.norms["MR"].running_mean.copy_(torch.tensor([1.0, -1.0, 0.5]))
        layer.norms["MR"].running_var.copy_(torch.tensor([4.0, 0.25, 2.0]))
    add_modality(layer, "PET", copy_from="MR")
    assert layer.modalities == ["CT", "MR", "PET"]
    pet, mr = layer.norms["PET"], layer.norms["MR"]
    assert pet.weight.data_ptr() != mr.weight.data_ptr()  # a copy, not the same tensor
    layer.eval()
    x = torch.randn(2, 3, 3, 3, 3)
    outputs = {}
    for m in ("CT", "MR", "PET"):
        set_modality(layer, m)
        outputs[m] = layer(x)
    torch.testing.assert_close(outputs["PET"], outputs["MR"])
    assert not torch.allclose(outputs["PET"], outputs["CT"])
    with torch.no_grad():
        pet.weight.add_(1.0)  # editing the copy leaves the source alone
    assert torch.equal(mr.weight, torch.tensor([0.5, 2.0, -1.0]))


def test_added_layer_follows_the_train_or_eval_mode():
    layer = make_layer().eval()
    add_modality(layer, "PET", copy_from="CT")
    assert layer.norms["PET"].training is False
    set_modality(layer, "PET")
    layer(torch.randn(2, 3, 3, 3, 3) + 4.0)  # eval: running statistics stay as copied
    assert torch.equal(layer.norms["PET"].running_mean, torch.zeros(3))
    train = make_layer().train()
    add_modality(train, "PET")
    assert train.norms["PET"].training is True


def test_add_modality_without_source_is_freshly_initialised():
    layer = make_layer()
    with torch.no_grad():
        layer.norms["CT"].weight.fill_(3.0)
    add_modality(layer, "PET")
    assert torch.equal(layer.norms["PET"].weight, torch.ones(3))
    assert torch.equal(layer.norms["PET"].running_mean, torch.zeros(3))


@pytest.mark.parametrize(("name", "dims", "expected"), [
    ("modality_batch", 3, nn.BatchNorm3d),
    ("modality_batch", 2, nn.BatchNorm2d),
    ("modality_instance", 3, nn.InstanceNorm3d),
])
def test_monai_norm_factory_lookup(name, dims, expected):
    factory = Norm[name, dims]
    layer = factory(5)
    assert isinstance(layer, ModalityNorm)
    assert layer.spatial_dims == dims and layer.num_features == 5
    assert all(isinstance(n, expected) for n in layer.norms.values())
    custom = factory(2, modalities=("A", "B", "C"))
    assert custom.modalities == ["A", "B", "C"]


def test_monai_get_norm_layer_accepts_the_name_with_arguments():
    layer = get_norm_layer(("modality_batch", {"modalities": ("CT", "MR")}), spatial_dims=3, channels=6)
    assert isinstance(layer, ModalityNorm) and layer.num_features == 6
    assert layer.norms["CT"].num_features == 6


def test_instance_norm_keeps_channels_last_activations_and_computes_the_same():
    """Training on the CPU runs channels-last (``device.cpu_channels_last``); the modality instance norm then
    normalises in that layout, with the values, gradients and weights file of ``nn.InstanceNorm3d``."""
    layer = make_layer("instance", channels=4)
    with torch.no_grad():
        layer.norms["CT"].weight.uniform_(0.5, 1.5)
        layer.norms["CT"].bias.uniform_(-0.5, 0.5)
    set_modality(layer, "CT")
    x = torch.randn(2, 4, 5, 6, 7)
    plain, last = x.clone().requires_grad_(), x.contiguous(memory_format=torch.channels_last_3d).requires_grad_()
    expected, got = layer(plain), layer(last)
    assert got.is_contiguous(memory_format=torch.channels_last_3d) and not got.is_contiguous()
    torch.testing.assert_close(got, expected)
    weight = torch.randn_like(expected)
    (expected * weight).sum().backward()
    grads = [t.grad.clone() for t in (plain, layer.norms["CT"].weight, layer.norms["CT"].bias)]
    layer.zero_grad()
    (got * weight).sum().backward()
    for want, have in zip(grads, (last.grad, layer.norms["CT"].weight.grad, layer.norms["CT"].bias.grad), strict=True):
        torch.testing.assert_close(have, want, rtol=1e-4, atol=1e-5)
    reference = nn.InstanceNorm3d(4, affine=True)
    assert isinstance(layer.norms["CT"], nn.InstanceNorm3d)
    assert layer.norms["CT"].state_dict().keys() == reference.state_dict().keys()
    reference.load_state_dict(layer.norms["CT"].state_dict())
    torch.testing.assert_close(reference(x), expected)


def test_channels_last_instance_norm_keeps_the_variance_of_a_channel_far_from_zero():
    """PyTorch's channels-last group normalisation on the CPU takes a one-pass variance; the layer centres
    each channel first, so a channel at 100 +- 0.01 normalises as in float64 (uncentred: errors near 10)."""
    torch.manual_seed(0)
    layer = make_layer("instance", channels=4)
    set_modality(layer, "CT")
    x = 100 + 0.01 * torch.randn(2, 4, 12, 16, 16)
    expected = nn.functional.instance_norm(x.double()).float()
    got = layer(x.contiguous(memory_format=torch.channels_last_3d))
    assert got.is_contiguous(memory_format=torch.channels_last_3d)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-3)
    uncentred = nn.functional.group_norm(x.contiguous(memory_format=torch.channels_last_3d), 4)
    assert (uncentred - expected).abs().max() > 0.1  # what the centring is for (if PyTorch mends it, drop the centring)
