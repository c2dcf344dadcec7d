"""LSSC: EAM correlations (Eq. 9-11) against NumPy, the total loss (Eq. 15), gradients, and the export."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from MultiModalSegLib.errors import ConfigError
from MultiModalSegLib.methods import build_inference_network, build_method
from MultiModalSegLib.methods.lssc import semantic_correlations
from MultiModalSegLib.networks.transformer_unet import TransformerBlock

torch.set_num_threads(1)
NET3D = {"name": "transformer_unet3d", "params": {"embed_dim": 4, "depths": [1, 1, 1, 1], "heads": [1, 1, 2, 2], "window": 2, "patch": [1, 2, 2]}}
NET2D = {"name": "transformer_unet2d", "params": {"embed_dim": 4, "depths": [1, 1, 1, 1], "heads": [1, 1, 2, 2], "window": 2, "patch": 2}}


def method(net=NET3D, seed=0, **params):
    torch.manual_seed(seed)
    return build_method("lssc", net, ["CT", "MR"], 3, eam_heads=2, **params)


def batches(seed=0, shape=(2, 1, 8, 16, 16)):
    g = torch.Generator().manual_seed(seed)
    return {m: {"image": torch.randn(*shape, generator=g), "label": torch.randint(0, 3, shape, generator=g)} for m in ("CT", "MR")}


def test_semantic_correlations_match_numpy():
    rng = np.random.default_rng(0)
    maps, kernels = rng.normal(size=(1, 3, 2, 5)), rng.normal(size=(1, 3, 2))
    e = semantic_correlations(torch.from_numpy(maps), torch.from_numpy(kernels)).numpy()
    for i in range(3):
        s = np.stack([kernels[0, i] @ maps[0, j] for j in range(3)])  # Eq. 9: Z x L
        g = np.exp(s) / np.exp(s).sum(0, keepdims=True)  # Eq. 10: softmax over j per token
        for j in range(3):
            assert np.isclose(e[0, i, j], (maps[0, j] * g[j]).sum() / g[j].sum())  # Eq. 11


@pytest.mark.parametrize("net", [NET3D, NET2D], ids=["3d", "2d"])
def test_total_loss_is_eq15_and_export_has_only_backbone_plus_scale_vectors(net):
    m = method(net)
    with torch.no_grad():  # a trained generator: scales differ per modality
        m.scale_generator.proj.weight.normal_(0, 0.5)
    losses = m.training_step(batches())
    expected = losses["seg_CT"] + losses["seg_MR"] + 0.5 * (losses["aux_CT"] + losses["aux_MR"]) + 0.5 * losses["mcr"] + 0.5 * losses["icr"]
    assert torch.isclose(losses["loss"], expected) and float(losses["icr"]) > 0
    exported = m.inference_network()
    n_backbone = sum(p.numel() for p in m.net.parameters())
    # Eq. 1-3: per modality, two vectors of each Transformer block's width (counted from the modules)
    widths = [blk.dim for blk in m.net.modules() if isinstance(blk, TransformerBlock)]
    depths = net["params"]["depths"]
    assert len(widths) == sum(depths) + sum(depths[:-1])  # encoder stages, then decoder stages 3..1
    assert sum(p.numel() for p in exported.parameters()) == n_backbone + 2 * 2 * sum(widths)
    assert set(exported.state_dict()) == set(m.net.state_dict()) | {f"{p}channel_scales.vectors.{k}" for k in ("CT", "MR") for p in [("net." if net is NET2D else "")]}
    assert not any("eam" in k or "class_embeddings" in k for k in exported.state_dict())
    rebuilt = build_inference_network({"method": "lssc", "network": m.network_spec, "modalities": ["CT", "MR"]})
    rebuilt.load_state_dict(exported.state_dict(), strict=True)
    x = batches(1)["CT"]["image"][:1]
    m.eval()
    rebuilt.eval()
    with torch.no_grad():
        for modality in ("CT", "MR"):
            assert torch.allclose(rebuilt(x, modality), m.logits(x, modality), atol=1e-5)
        assert not torch.allclose(rebuilt(x, "CT"), rebuilt(x, "MR"))


def test_without_channel_scaling_the_export_is_the_backbone_itself():
    net = {"name": NET3D["name"], "params": {**NET3D["params"], "channel_scaling": False}}
    m = method(net)
    assert m.scale_generator is None and m.inference_network() is m.net


def test_consistency_losses_reach_the_shared_backbone_and_the_class_embeddings():
    m = method()
    losses = m.training_step(batches())
    losses["icr"].backward(retain_graph=True)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.net.core.encoder.parameters())
    m.zero_grad()
    losses["mcr"].backward()
    assert m.class_embeddings["CT"].grad.abs().sum() > 0 and m.class_embeddings["MR"].grad.abs().sum() > 0


def test_eams_are_modality_specific_by_default_and_bad_networks_are_config_errors():
    assert method().eams["CT"] is not method().eams["MR"]
    shared = method(eam_per_modality=False)
    assert shared.eams["CT"] is shared.eams["MR"]
    with pytest.raises(ConfigError, match="Transformer"):
        build_method("lssc", {"name": "unet3d", "params": {"features": [4, 8]}}, ["CT", "MR"], 3)
    with pytest.raises(ConfigError, match="four stages"):
        method({"name": "transformer_unet3d", "params": {"embed_dim": 4, "depths": [1, 1, 1], "heads": [1, 1, 2]}})
