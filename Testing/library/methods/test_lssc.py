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
    assert torch.isclose(losses["loss"], expected) and float(losses["icr"].detach()) > 0
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


# ----- independent checks of Eq. 1 and Eq. 4-8 (NumPy from the modules' weights)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


def _np_layer_norm(x: np.ndarray, norm: torch.nn.LayerNorm) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + norm.eps) * _np(norm.weight) + _np(norm.bias)


def _np_linear(x: np.ndarray, layer: torch.nn.Linear) -> np.ndarray:
    return x @ _np(layer.weight).T + _np(layer.bias)


def _np_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


def test_external_attention_is_eq4_to_eq8_in_numpy():
    """One EAM on a 2D feature map: cross attention of the class embeddings on the tokens, head by
    head (Eq. 4-6), the residual updates (Eq. 7-8), the semantic-aware maps A and the next scale's
    embeddings (the 1x1 reduction), recomputed with NumPy loops from the module's weights."""
    from scipy.special import erf

    from MultiModalSegLib.methods.lssc import ExternalAttention

    torch.manual_seed(3)
    z, d, heads, out_dim = 3, 8, 2, 4
    eam = ExternalAttention(d, z, heads, spatial_dims=2, out_dim=out_dim, mlp_ratio=2.0).double()
    with torch.no_grad():  # non-trivial norms
        for norm in (eam.norm_q, eam.norm_f, eam.norm_mlp):
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.3, 0.3)
    q = torch.randn(1, z, d, dtype=torch.float64)
    features = torch.randn(1, d, 3, 5, dtype=torch.float64)
    q_next, correlations, aux = eam(q, features)

    Q, F_tokens = _np(q[0]), _np(features[0]).reshape(d, -1).T  # Z x D, L x D
    qn, fn = _np_layer_norm(Q, eam.norm_q), _np_layer_norm(F_tokens, eam.norm_f)  # Norm(Q), Norm(F) of Eq. 7
    qq, kk, vv = _np_linear(qn, eam.w_q), _np_linear(fn, eam.w_k), _np_linear(fn, eam.w_v)  # Eq. 4
    dh = d // heads
    outs, maps = [], []
    for h in range(heads):
        cols = slice(h * dh, (h + 1) * dh)
        logits = qq[:, cols] @ kk[:, cols].T / np.sqrt(dh)  # q k^T / sqrt(d): Z x L
        maps.append(logits)
        outs.append(_np_softmax(logits, axis=1) @ vv[:, cols])  # Eq. 5: softmax over the tokens
    q_hat = _np_linear(np.concatenate(outs, axis=1), eam.w_o) + Q  # Eq. 6-7
    hidden = _np_linear(_np_layer_norm(q_hat, eam.norm_mlp), eam.mlp[0])
    q_tilde = _np_linear(0.5 * hidden * (1 + erf(hidden / np.sqrt(2))), eam.mlp[2]) + q_hat  # Eq. 8 (GELU MLP)
    expected_next = _np_linear(q_tilde, eam.reduce)  # Z x 2C -> next scale's width
    np.testing.assert_allclose(_np(q_next[0]), expected_next, rtol=1e-10, atol=1e-12)
    assert q_next.shape == (1, z, out_dim)

    A = np.stack(maps, axis=1)  # Z x N x L: the semantic-aware feature maps
    kernels = np.einsum("zd,zdn->zn", qn, _np(eam.filters))  # K^i = Q^i W^i (Eq. 9's kernels)
    expected_e = np.zeros((z, z))
    for i in range(z):
        s = np.stack([kernels[i] @ A[j] for j in range(z)])  # Eq. 9
        gate = _np_softmax(s, axis=0)  # Eq. 10
        for j in range(z):
            expected_e[i, j] = (A[j] * gate[j]).sum() / gate[j].sum()  # Eq. 11
    np.testing.assert_allclose(_np(correlations[0]), expected_e, rtol=1e-10, atol=1e-12)
    # Eq. 12's input: a 1x1 convolution grouped by class over the N heads of A
    w, b = _np(eam.aux_head.weight)[:, :, 0, 0], _np(eam.aux_head.bias)
    expected_aux = np.stack([w[c] @ A[c] + b[c] for c in range(z)]).reshape(z, 3, 5)
    np.testing.assert_allclose(_np(aux[0]), expected_aux, rtol=1e-10, atol=1e-12)


def test_channel_scales_are_eq1_and_scale_every_block_as_eq2_and_eq3():
    """Eq. 1 in NumPy: Omega = w_1 Q, (Phi_1, Phi_2) of each block = Omega (W_2, W_3) (+ the bias
    that starts them at one), sliced block by block in order; every block then computes
    X + Phi_1 * MSA(Norm X) and X' + Phi_2 * FFN(Norm X') (Eq. 2-3)."""
    m = method()
    with torch.no_grad():
        m.scale_generator.proj.weight.normal_(0, 0.5)
        m.scale_generator.w1.uniform_(0, 1)
    q = m.class_embeddings["MR"]
    omega = _np(m.scale_generator.w1) @ _np(q)  # Eq. 1: Omega = w_1 Q, a 4C vector
    expected = _np_linear(omega, m.scale_generator.proj)
    np.testing.assert_allclose(_np(m.channel_scale_vector("MR")), expected, rtol=1e-6, atol=1e-6)

    seen = []
    original = TransformerBlock.forward

    def recording(block, x, phi_1=None, phi_2=None):
        out = original(block, x, phi_1, phi_2)
        h = block._attention(block.norm1(x))
        x1 = x + phi_1 * h  # Eq. 2
        torch.testing.assert_close(out, x1 + phi_2 * block.mlp(block.norm2(x1)))  # Eq. 3
        seen.append((block.dim, phi_1.detach(), phi_2.detach()))
        return out

    TransformerBlock.forward = recording
    try:
        m.logits(batches()["MR"]["image"][:1], "MR")
    finally:
        TransformerBlock.forward = original
    offset, flat = 0, torch.from_numpy(expected).float()
    for dim, phi_1, phi_2 in seen:  # encoder blocks, then decoder blocks, each (Phi_1, Phi_2) in turn
        torch.testing.assert_close(phi_1, flat[offset : offset + dim], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(phi_2, flat[offset + dim : offset + 2 * dim], rtol=1e-5, atol=1e-5)
        offset += 2 * dim
    assert offset == flat.numel() == m.net.core.scale_size


@pytest.mark.parametrize("seed", [0, 1])
def test_from_scratch_the_auxiliary_loss_moves_the_backbone_more_than_the_segmentation_loss(seed):
    """Why the recipe starts from a pretrained backbone (see the LSSC docstring): at
    initialisation alpha * L_aux (three scales, summed as Eq. 12) outweighs L_seg on the backbone."""
    m = method(seed=seed)
    out = m.training_step(batches(seed))
    params = list(m.net.parameters())

    def norm(loss: torch.Tensor) -> float:
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        return float(sum(g.pow(2).sum() for g in grads if g is not None)) ** 0.5

    assert norm(m.alpha * (out["aux_CT"] + out["aux_MR"])) > norm(out["seg_CT"] + out["seg_MR"])
