"""Transformer U-Nets (3D nnFormer-like, 2D Swin-UNet-like slice-wise): shapes, windows, channel scales."""

from __future__ import annotations

import pytest
import torch

from MultiModalSegLib.errors import ConfigError, InputError
from MultiModalSegLib.networks import NETWORKS, build_network
from MultiModalSegLib.networks.transformer_unet import (
    TransformerBlock,
    TransformerUNet,
    window_partition,
    window_reverse,
)

torch.set_num_threads(1)

TINY = {"out_channels": 3, "embed_dim": 4, "depths": (1, 2, 1, 1), "heads": (1, 1, 2, 2), "window": 2, "patch": (1, 2, 2)}


def tiny3d(seed: int = 0, **params) -> TransformerUNet:
    torch.manual_seed(seed)
    return build_network("transformer_unet3d", **{**TINY, **params})


def test_both_variants_are_registered_and_bad_parameters_are_config_errors():
    assert {"transformer_unet3d", "transformer_unet2d"} <= set(NETWORKS)
    with pytest.raises(ConfigError, match="layer"):
        tiny3d(norm="batch")
    with pytest.raises(ConfigError, match="heads"):
        tiny3d(heads=(3, 1, 2, 2))
    with pytest.raises(ConfigError, match="patch"):
        tiny3d(patch=(2, 2))


def test_3d_logits_and_three_decoder_scales():
    net = tiny3d()
    assert net.divisors == (8, 16, 16) and net.divisor == 16
    x = torch.randn(2, 1, 8, 16, 32)
    feats = net.features_dict(x, "CT")
    assert feats["logits"].shape == (2, 3, 8, 16, 32)
    # coarse to fine: the paper's Scale-1 (4C at 1/4 of the tokens' grid), Scale-2 (2C), Scale-3 (C)
    assert [tuple(f.shape) for f in feats["decoder"]] == [(2, 16, 2, 2, 4), (2, 8, 4, 4, 8), (2, 4, 8, 8, 16)]
    assert torch.equal(net(x, "CT"), feats["logits"])


def test_inputs_off_the_divisor_get_one_clear_error():
    with pytest.raises(InputError, match="multiple of"):
        tiny3d()(torch.randn(1, 1, 8, 16, 24), "CT")


def test_2d_variant_maps_volumes_slice_by_slice_with_one_neighbour_each_side():
    torch.manual_seed(0)
    net = build_network("transformer_unet2d", **{**TINY, "patch": 2, "window": 3}).eval()
    assert net.core.spatial_dims == 2 and net.core.in_channels == 3
    x = torch.randn(1, 1, 5, 16, 16)
    out = net(x, "MR")
    assert out.shape == (1, 3, 5, 16, 16)
    x2 = x.clone()
    x2[:, :, 0] += 1.0
    changed = (net(x2, "MR") - out).abs().amax(dim=(0, 1, 3, 4))
    assert changed[0] > 0 and changed[1] > 0  # slice 0 and its neighbour see the change
    assert torch.all(changed[2:] == 0)  # the others do not
    assert net.image_batch(x).shape == (5, 3, 16, 16) and net.label_batch(x).shape == (5, 1, 16, 16)


def test_window_partition_round_trip():
    x = torch.randn(2, 4, 6, 8, 3)
    windows = window_partition(x, (2, 3, 4))
    assert windows.shape == (2 * 2 * 2 * 2, 24, 3)
    assert torch.equal(window_reverse(windows, (2, 3, 4), (4, 6, 8), 2), x)


def _influence(block: TransformerBlock, token: tuple[int, int, int]) -> set[tuple[int, ...]]:
    """The tokens whose output changes when ``token``'s input changes (weights enlarged so that
    every real dependency is far above rounding)."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in block.attn.parameters():
            p.normal_(0.0, 0.5)
    x = torch.randn(1, 4, 4, 4, 8)
    x2 = x.clone()
    x2[(0, *token)] += torch.randn(8)  # not a constant: LayerNorm would remove it
    with torch.no_grad():
        diff = (block(x2) - block(x)).abs().amax(-1)[0]
    return {tuple(int(i) for i in idx) for idx in (diff > 1e-4).nonzero()}


def test_plain_windows_keep_attention_inside_each_window():
    block = TransformerBlock(8, 2, (2, 2, 2), shifted=False)
    assert _influence(block, (1, 1, 1)) == {(a, b, c) for a in (0, 1) for b in (0, 1) for c in (0, 1)}


def test_shifted_windows_are_masked_at_the_wrap_around_seam():
    block = TransformerBlock(8, 2, (2, 2, 2), shifted=True)
    # shifted by one: tokens 1-2 share a window on each axis; 3 and 0 share one only by wrapping, masked
    assert _influence(block, (1, 1, 1)) == {(a, b, c) for a in (1, 2) for b in (1, 2) for c in (1, 2)}
    assert _influence(block, (0, 0, 0)) == {(0, 0, 0)}


def test_windows_larger_than_the_feature_map_shrink_and_padding_is_cropped():
    block = TransformerBlock(8, 2, (4, 4, 4), shifted=True)
    x = torch.randn(2, 2, 3, 5, 8)
    assert block(x).shape == x.shape


def test_channel_scales_are_the_only_extra_parameters_and_act_per_modality():
    plain, scaled = tiny3d(), tiny3d(channel_scaling=True, modalities=("CT", "MR"))
    n_plain = sum(p.numel() for p in plain.parameters())
    n_scaled = sum(p.numel() for p in scaled.parameters())
    # Eq. 1-3: two vectors of the block's width per Transformer block and modality
    widths = [4, 8, 8, 16, 32, 16, 8, 8, 4]  # encoder 1+2+1+1 blocks, decoder 1+2+1 blocks
    assert scaled.block_dims == widths and scaled.scale_size == 2 * sum(widths)
    assert n_scaled - n_plain == 2 * scaled.scale_size
    x = torch.randn(1, 1, 8, 16, 16)
    # all-ones scales (the initial value) give the plain block
    assert torch.allclose(scaled(x, "CT"), plain(x, "CT"), atol=1e-6)
    torch.manual_seed(3)
    with torch.no_grad():
        scaled.channel_scales.vectors["MR"].uniform_(0.5, 1.5)
    assert not torch.allclose(scaled(x, "MR"), scaled(x, "CT"))
    # the stored vector and the same vector passed explicitly are one computation
    assert torch.allclose(scaled(x, "MR"), plain(x, "MR", scales=scaled.channel_scales.vectors["MR"].detach()), atol=1e-6)
    with pytest.raises(InputError, match="PET"):
        scaled(x, "PET")
    with pytest.raises(InputError, match="vector"):
        plain(x, "CT", scales=torch.ones(3))
