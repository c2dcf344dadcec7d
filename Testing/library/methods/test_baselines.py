"""The "Y"- and "X"-shaped baselines: which parameters each modality owns and which it shares."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from MultiModalSegLib.errors import ConfigError, InputError
from MultiModalSegLib.losses import as_target
from MultiModalSegLib.methods import build_inference_network, build_method
from MultiModalSegLib.networks import UNet
from MultiModalSegLib.networks.partly_shared import PartlySharedUNet, PerModality, partly_shared_network

torch.set_num_threads(1)

N_CLASSES = 3
MODALITIES = ["CT", "MR"]
FEATURES = [4, 8, 16]
NET = {"name": "unet3d", "params": {"features": FEATURES}}


def make(name: str, network: dict = NET, seed: int = 0):
    torch.manual_seed(seed)
    return build_method(name, network, MODALITIES, N_CLASSES)


def data(seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    label = torch.randint(0, N_CLASSES, (2, 1, 4, 8, 8), generator=g).float()
    return {m: {"image": torch.rand(2, 1, 4, 8, 8, generator=g) + 0.5 * label, "label": label} for m in MODALITIES}


def ids(params) -> set[int]:
    return {id(p) for p in params}


def used_by(method, modality: str) -> set[int]:
    """The parameters a loss on ``modality``'s batch reaches."""
    method.zero_grad(set_to_none=True)
    batch = data()[modality]
    method.seg_loss(method.logits(batch["image"], modality), as_target(batch["label"])).backward()
    return {id(p) for p in method.parameters() if p.grad is not None and p.grad.abs().sum() > 0}


def test_y_shaped_owns_its_encoder_levels_and_shares_the_deepest_level_decoder_and_head():
    method = make("y_shaped").train()
    net = method.inference_network()
    assert isinstance(net, PartlySharedUNet) and net.specific == ["encoder"]
    own = {m: ids(p for block in net.encoder[:-1] for p in block.blocks[m].parameters()) for m in MODALITIES}
    shared = ids(p for part in (net.encoder[-1], net.decoder, net.head) for p in part.parameters())
    assert own["CT"].isdisjoint(own["MR"]) and own["CT"] and shared
    assert ids(method.parameters()) == own["CT"] | own["MR"] | shared
    ct, mr = used_by(method, "CT"), used_by(method, "MR")
    assert ct == own["CT"] | shared and mr == own["MR"] | shared
    assert ct & mr == shared


def test_x_shaped_shares_only_the_middle_convolution():
    method = make("x_shaped").train()
    net = method.inference_network()
    down, middle = net.encoder[-1]
    assert isinstance(down, PerModality) and not isinstance(middle, PerModality)
    shared = ids(middle.parameters())
    assert shared == ids([middle[0].conv.weight, middle[1].weight, middle[1].bias])  # conv + its BatchNorm
    ct, mr = used_by(method, "CT"), used_by(method, "MR")
    assert ct & mr == shared
    assert ct | mr == ids(method.parameters())
    for part in (*net.encoder[:-1], down, *net.decoder, net.head):
        assert isinstance(part, PerModality)
        assert ids(part.blocks["CT"].parameters()).isdisjoint(ids(part.blocks["MR"].parameters()))


@pytest.mark.parametrize("name", ["y_shaped", "x_shaped"])
def test_each_modality_has_the_same_layers_under_its_name(name):
    state = make(name).inference_network().state_dict()
    per = {m: {k.replace(f".blocks.{m}.", ".blocks.*."): v.shape for k, v in state.items() if f".blocks.{m}." in k} for m in MODALITIES}
    assert per["CT"] and per["CT"] == per["MR"]


def test_parameter_counts_follow_from_the_unet_blocks():
    plain = UNet(spatial_dims=3, features=FEATURES, out_channels=N_CLASSES, norm="batch")

    def count(module: nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    joint, encoder_above = count(plain), sum(count(b) for b in plain.encoder[:-1])
    middle = count(plain.encoder[-1].conv2) + count(plain.encoder[-1].norm2)
    assert count(make("joint").inference_network()) == joint
    assert count(make("y_shaped").inference_network()) == joint + encoder_above
    assert count(make("x_shaped").inference_network()) == 2 * joint - middle


def test_each_modality_path_computes_a_plain_unet():
    """The X shape's CT path, put into a U-Net's slots, gives the same output: only sharing differs."""
    net = make("x_shaped").inference_network().eval()
    down, middle = net.encoder[-1]
    for m in MODALITIES:
        unet = UNet(spatial_dims=3, features=FEATURES, out_channels=N_CLASSES, norm="batch").eval()
        for i in range(len(FEATURES) - 1):
            unet.encoder[i] = net.encoder[i].blocks[m]
        deepest = unet.encoder[-1]
        deepest.conv1, deepest.norm1 = down.blocks[m][0], down.blocks[m][1]
        deepest.conv2, deepest.norm2 = middle[0], middle[1]
        for i in range(len(unet.decoder)):
            unet.decoder[i] = net.decoder[i].blocks[m]
        unet.head = net.head.blocks[m]
        x = torch.rand(1, 1, 4, 8, 8)
        with torch.no_grad():
            torch.testing.assert_close(net(x, m), unet(x, m))


@pytest.mark.parametrize("name", ["y_shaped", "x_shaped"])
@pytest.mark.parametrize("network", ["unet3d", "unet2d", "unet2.5d"])
def test_inference_network_is_rebuilt_from_metadata_and_segments_one_volume(name, network):
    method = make(name, {"name": network, "params": {"features": [4, 8]}})
    out = method.train().training_step(data())
    assert torch.isfinite(out["loss"])
    torch.testing.assert_close(out["loss"], out["seg_CT"] + out["seg_MR"])
    metadata = {"method": name, "network": method.network_spec, "modalities": {"CT": {}, "MR": {}}}
    rebuilt = build_inference_network(metadata)
    trained = method.inference_network()
    assert list(rebuilt.state_dict()) == list(trained.state_dict())
    rebuilt.load_state_dict(trained.state_dict(), strict=True)
    rebuilt.eval()
    trained.eval()
    x = torch.rand(1, 1, 4, 8, 8)
    with torch.no_grad():
        outputs = {m: rebuilt(x, m) for m in MODALITIES}
        for m in MODALITIES:
            assert outputs[m].shape == (1, N_CLASSES, 4, 8, 8)
            torch.testing.assert_close(outputs[m], trained(x, m))
    assert not torch.allclose(outputs["CT"], outputs["MR"])  # each modality runs its own layers
    with pytest.raises(InputError, match="PET"):
        rebuilt(x, "PET")


def test_bad_layouts_and_networks_are_config_errors():
    with pytest.raises(ConfigError, match="top"):
        PartlySharedUNet(specific=("top",), features=FEATURES)
    with pytest.raises(ConfigError, match="two"):
        PartlySharedUNet(specific=("encoder",), features=[4])
    with pytest.raises(ConfigError, match="unet3d"):
        partly_shared_network("swin", ("encoder",), features=FEATURES)
    shared_only = PartlySharedUNet(specific=(), features=FEATURES, out_channels=N_CLASSES, norm="batch")
    plain = UNet(features=FEATURES, out_channels=N_CLASSES, norm="batch")
    assert list(shared_only.state_dict()) == list(plain.state_dict())
