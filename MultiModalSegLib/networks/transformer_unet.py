"""Transformer U-Nets: a 3D nnFormer-like and a 2D Swin-UNet-like encoder-decoder.

The backbone of LSSC (Yang et al., "Toward unpaired multi-modal medical image segmentation via
learning structured semantic consistency", Sec. 3.1-3.2 and Table 1), usable by any method:

* patch embedding: a strided convolution whose kernel and stride are ``patch`` voxels
  (the paper: 4x4 in 2D, 4x4x2 in 3D, i.e. ``(2, 4, 4)`` in this library's ``(z, y, x)`` order);
* ``len(depths)`` stages of Transformer blocks with window (volume-based) multi-head self-attention
  and a learnt relative position bias; every second block of a stage shifts its windows by half a
  window (Swin / nnFormer), with the usual mask so that attention never crosses the shift seam;
* down-sampling between stages by a stride-2 convolution doubling the channels, up-sampling by a
  stride-2 transposed convolution halving them (nnFormer; in 2D this is the same linear map as
  Swin-UNet's patch merging / expanding);
* decoder stages of the same depths, each fusing the encoder's skip features by concatenation and a
  linear projection (Swin-UNet; nnFormer adds them instead: a choice);
* a final transposed convolution of stride ``patch`` to the class logits (nnFormer).

Choices the paper leaves open: nnFormer's global attention at the bottleneck is replaced by the same
local windows (at the coarsest stage a window usually covers the whole patch); a window larger than
the feature map shrinks to it (and is then not shifted); a feature map that is not a multiple of
the window is zero-padded after the normalisation, as Swin does; the paper's modality-specific 1x1
image-embedding convolutions are not used, so that the whole network is shared by the modalities.

Modality-aware channel-wise multiplication (Eq. 1-3, the paper's "Joint V3"): every block scales
the output of its attention branch by ``Phi_1`` and that of its feed-forward branch by ``Phi_2``
(vectors of the block's width). The network takes them either as an argument of ``forward``
(``scales``: one flat vector, the blocks' ``(Phi_1, Phi_2)`` pairs concatenated in block order, as
a training method computes them from its class embeddings) or, with ``channel_scaling=True``, from
its own fixed per-modality vectors (:class:`ChannelScales`): the exported form, in which the
producer of the scales has been folded into one vector per modality.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, InputError
from .slicewise import SliceWise

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_CONV_T = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_MASKED = -100.0  # added to attention logits across a shifted-window seam (exp(-100) is 0 in practice)


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.movedim(1, -1)


def _channels_first(x: torch.Tensor) -> torch.Tensor:
    return x.movedim(-1, 1)


def window_partition(x: torch.Tensor, window: Sequence[int]) -> torch.Tensor:
    """``[B, *S, C]`` (``S`` a multiple of ``window``) -> ``[B * n_windows, prod(window), C]``, batch-major."""
    b, *spatial, c = x.shape
    nd = len(spatial)
    shape = [b]
    for s, w in zip(spatial, window, strict=True):
        shape += [s // w, w]
    x = x.reshape(*shape, c)
    perm = [0, *range(1, 2 * nd, 2), *range(2, 2 * nd + 1, 2), 2 * nd + 1]
    return x.permute(perm).reshape(-1, math.prod(window), c)


def window_reverse(windows: torch.Tensor, window: Sequence[int], spatial: Sequence[int], batch: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: ``[B * n_windows, prod(window), C]`` -> ``[B, *S, C]``."""
    nd = len(spatial)
    c = windows.shape[-1]
    grid = [s // w for s, w in zip(spatial, window, strict=True)]
    x = windows.reshape(batch, *grid, *window, c)
    perm = [0]
    for i in range(nd):
        perm += [1 + i, 1 + nd + i]
    return x.permute(*perm, 2 * nd + 1).reshape(batch, *spatial, c)


def shifted_window_mask(spatial: Sequence[int], window: Sequence[int], shift: Sequence[int]) -> torch.Tensor:
    """``[n_windows, n, n]`` additive mask: 0 between tokens of the same region before the cyclic
    shift, :data:`_MASKED` between tokens that only became neighbours by wrapping around."""
    regions = torch.zeros((1, *spatial, 1))
    ranges = [
        (slice(0, -w), slice(-w, -s), slice(-s, None)) if s > 0 else (slice(None),)
        for w, s in zip(window, shift, strict=True)
    ]
    for label, region in enumerate(itertools.product(*ranges)):
        regions[(slice(None), *region, slice(None))] = label
    ids = window_partition(regions, window).squeeze(-1)  # n_windows, n
    differ = ids[:, None, :] != ids[:, :, None]
    return torch.where(differ, torch.tensor(_MASKED), torch.tensor(0.0))


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows of at most ``window`` tokens per axis, with a learnt
    relative position bias (one table entry per relative offset and head)."""

    def __init__(self, dim: int, heads: int, window: Sequence[int]) -> None:
        super().__init__()
        self.heads = heads
        self.window = tuple(window)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.relative_bias = nn.Parameter(torch.zeros(math.prod(2 * w - 1 for w in self.window), heads))
        nn.init.trunc_normal_(self.relative_bias, std=0.02)
        self._index: dict[tuple[int, ...], torch.Tensor] = {}

    def _bias_index(self, window: tuple[int, ...]) -> torch.Tensor:
        """Index into the bias table for every pair of tokens of a (possibly shrunk) window."""
        if window not in self._index:
            coords = torch.stack(torch.meshgrid([torch.arange(w) for w in window], indexing="ij")).flatten(1)
            rel = coords[:, :, None] - coords[:, None, :]
            index = torch.zeros_like(rel[0])
            for axis, full in enumerate(self.window):
                index = index * (2 * full - 1) + rel[axis] + full - 1
            self._index[window] = index
        return self._index[window]

    def forward(self, x: torch.Tensor, window: tuple[int, ...], mask: torch.Tensor | None, batch: int) -> torch.Tensor:
        bw, n, c = x.shape
        q, k, v = self.qkv(x).reshape(bw, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        index = self._bias_index(window).to(x.device)
        bias = self.relative_bias[index.reshape(-1)].reshape(n, n, self.heads).permute(2, 0, 1).to(q.dtype)
        if mask is None:
            attn_mask = bias.unsqueeze(0)
        else:
            n_windows = mask.shape[0]
            attn_mask = bias[None, None] + mask.to(q.device, q.dtype)[None, :, None]
            attn_mask = attn_mask.expand(batch, n_windows, self.heads, n, n).reshape(bw, self.heads, n, n)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.proj(out.transpose(1, 2).reshape(bw, n, c))


class TransformerBlock(nn.Module):
    """Eq. 2-3: ``X' = X + Phi_1 * MSA(LN(X))``, ``X'' = X' + Phi_2 * FFN(LN(X'))`` on ``[B, *S, C]``.

    Without scales (``phi_1 = phi_2 = None``) this is the plain Swin / nnFormer block.
    """

    def __init__(self, dim: int, heads: int, window: Sequence[int], shifted: bool, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.dim = dim
        self.window = tuple(window)
        self.shifted = shifted
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, window)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def _attention(self, x: torch.Tensor) -> torch.Tensor:
        b, *spatial, _ = x.shape
        window = tuple(min(w, s) for w, s in zip(self.window, spatial, strict=True))
        shift = tuple(w // 2 if self.shifted and s > w else 0 for w, s in zip(window, spatial, strict=True))
        pads = [(-s) % w for s, w in zip(spatial, window, strict=True)]
        if any(pads):
            pad_spec = [0, 0]
            for p in reversed(pads):
                pad_spec += [0, p]
            x = F.pad(x, pad_spec)
        padded = tuple(x.shape[1:-1])
        dims = tuple(range(1, len(spatial) + 1))
        mask = None
        if any(shift):
            x = torch.roll(x, shifts=[-s for s in shift], dims=dims)
            mask = shifted_window_mask(padded, window, shift)
        out = self.attn(window_partition(x, window), window, mask, b)
        out = window_reverse(out, window, padded, b)
        if any(shift):
            out = torch.roll(out, shifts=list(shift), dims=dims)
        if any(pads):
            out = out[(slice(None), *(slice(0, s) for s in spatial))]
        return out

    def forward(self, x: torch.Tensor, phi_1: torch.Tensor | None = None, phi_2: torch.Tensor | None = None) -> torch.Tensor:
        h = self._attention(self.norm1(x))
        x = x + (h if phi_1 is None else h * phi_1)
        h = self.mlp(self.norm2(x))
        return x + (h if phi_2 is None else h * phi_2)


class ChannelScales(nn.Module):
    """Fixed modality-specific channel scales of the exported network: one flat vector per modality
    holding every block's ``(Phi_1, Phi_2)`` diagonals (Eq. 1) in block order (initialised to one)."""

    def __init__(self, modalities: Sequence[str], size: int) -> None:
        super().__init__()
        self.size = size
        self.vectors = nn.ParameterDict({m: nn.Parameter(torch.ones(size)) for m in modalities})

    def forward(self, modality: str | None) -> torch.Tensor:
        if modality not in self.vectors:
            raise InputError(
                f"this network has channel scales for {list(self.vectors)}, not {modality!r}; "
                "call it as net(image, modality) with one of those modalities."
            )
        return self.vectors[modality]


def _as_tuple(value: int | Sequence[int], n: int, name: str) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * n
    value = tuple(int(v) for v in value)
    if len(value) != n:
        raise ConfigError(f"network parameter {name} needs {n} values (one per spatial axis), got {list(value)}.")
    return value


class TransformerUNet(nn.Module):
    """A U-shaped window-attention Transformer on ``[B, in_channels, *S]`` images, ``S`` 2D or 3D.

    Stage ``i`` works at ``embed_dim * 2**i`` channels with ``heads[i]`` heads and ``depths[i]``
    blocks, in the encoder and (for all but the deepest stage) in the decoder. Inputs must be
    multiples of :attr:`divisors` along each axis (``patch * 2**(stages-1)``); :attr:`divisor` is
    the largest of them. ``norm`` is accepted for the registry's common parameters and must be
    ``"layer"`` (Transformer blocks normalise tokens with LayerNorm).
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 5,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 2, 2),
        heads: Sequence[int] = (3, 6, 12, 24),
        window: int | Sequence[int] | None = None,
        patch: int | Sequence[int] | None = None,
        mlp_ratio: float = 4.0,
        channel_scaling: bool = False,
        modalities: Sequence[str] = ("CT", "MR"),
        norm: str = "layer",
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ConfigError(f"a Transformer U-Net is 2D or 3D, not {spatial_dims}D.")
        if norm != "layer":
            raise ConfigError(f"the Transformer U-Net normalises with LayerNorm; set the network's norm to 'layer' (got {norm!r}).")
        if len(depths) < 2 or len(heads) != len(depths):
            raise ConfigError(f"network depths {list(depths)} and heads {list(heads)} need one entry per stage (two stages at least).")
        self.spatial_dims = nd = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.window = _as_tuple(window if window is not None else (7 if nd == 2 else 4), nd, "window")
        self.patch = _as_tuple(patch if patch is not None else ((4, 4) if nd == 2 else (2, 4, 4)), nd, "patch")
        self.dims = [embed_dim * 2**i for i in range(len(depths))]
        for dim, h in zip(self.dims, heads, strict=True):
            if dim % h:
                raise ConfigError(f"a stage of width {dim} cannot have {h} attention heads; choose heads that divide embed_dim * 2**stage.")
        conv, conv_t = _CONV[nd], _CONV_T[nd]

        def stage(i: int) -> nn.ModuleList:
            return nn.ModuleList(
                TransformerBlock(self.dims[i], heads[i], self.window, shifted=j % 2 == 1, mlp_ratio=mlp_ratio)
                for j in range(depths[i])
            )

        self.patch_embed = conv(in_channels, embed_dim, kernel_size=self.patch, stride=self.patch)
        self.embed_norm = nn.LayerNorm(embed_dim)
        self.encoder = nn.ModuleList(stage(i) for i in range(len(depths)))
        self.down = nn.ModuleList(conv(self.dims[i], self.dims[i + 1], 2, 2) for i in range(len(depths) - 1))
        self.down_norms = nn.ModuleList(nn.LayerNorm(self.dims[i + 1]) for i in range(len(depths) - 1))
        levels = list(reversed(range(len(depths) - 1)))  # decoder levels, coarse to fine
        self.decoder_levels = levels
        self.up = nn.ModuleList(conv_t(self.dims[i + 1], self.dims[i], 2, 2) for i in levels)
        self.fuse = nn.ModuleList(nn.Linear(2 * self.dims[i], self.dims[i]) for i in levels)
        self.decoder = nn.ModuleList(stage(i) for i in levels)
        self.final_norm = nn.LayerNorm(embed_dim)
        self.head = conv_t(embed_dim, out_channels, kernel_size=self.patch, stride=self.patch)
        self.apply(_init_weights)
        self.block_dims = [b.dim for s in (*self.encoder, *self.decoder) for b in s]
        self.channel_scales = ChannelScales(modalities, self.scale_size) if channel_scaling else None

    @property
    def scale_size(self) -> int:
        """Length of the flat scale vector: ``2 * sum`` of the blocks' widths (Eq. 1, all blocks)."""
        return 2 * sum(self.block_dims)

    @property
    def divisors(self) -> tuple[int, ...]:
        """Per axis, the input size must be a multiple of this."""
        return tuple(p * 2 ** (len(self.dims) - 1) for p in self.patch)

    @property
    def divisor(self) -> int:
        """Input sizes must be multiples of this (the largest of :attr:`divisors`; sliding windows pad)."""
        return max(self.divisors)

    @property
    def core(self) -> TransformerUNet:
        return self

    def image_batch(self, x: torch.Tensor) -> torch.Tensor:
        """The images this network runs on for a ``[B, 1, *S]`` input (itself, here)."""
        return x

    def label_batch(self, label: torch.Tensor) -> torch.Tensor:
        """Labels aligned with :meth:`image_batch` (themselves, here)."""
        return label

    def _scale_pairs(self, modality: str | None, scales: torch.Tensor | None) -> list[tuple[torch.Tensor | None, torch.Tensor | None]]:
        if scales is None and self.channel_scales is not None:
            scales = self.channel_scales(modality)
        if scales is None:
            return [(None, None)] * len(self.block_dims)
        if scales.shape != (self.scale_size,):
            raise InputError(f"channel scales must be one vector of {self.scale_size} values, got shape {tuple(scales.shape)}.")
        pairs, offset = [], 0
        for dim in self.block_dims:
            pairs.append((scales[offset : offset + dim], scales[offset + dim : offset + 2 * dim]))
            offset += 2 * dim
        return pairs

    def features_dict(
        self, x: torch.Tensor, modality: str | None = None, scales: torch.Tensor | None = None
    ) -> dict[str, list[torch.Tensor] | torch.Tensor]:
        """Run the network: ``{"encoder": [...], "decoder": [...], "logits": tensor}``.

        Feature maps are channels-first ``[B, C, *S]``; ``decoder`` runs from the coarsest decoder
        stage (width ``4 * embed_dim`` with four stages: the paper's Scale-1) to the finest.
        """
        spatial = x.shape[2:]
        if len(spatial) != self.spatial_dims or any(s % d for s, d in zip(spatial, self.divisors, strict=True)):
            raise InputError(
                f"this network needs {self.spatial_dims}D inputs whose size is a multiple of {list(self.divisors)}, "
                f"got {list(spatial)}; pad or crop the image (sliding-window inference does it)."
            )
        pairs = iter(self._scale_pairs(modality, scales))
        h = self.embed_norm(_channels_last(self.patch_embed(x)))
        skips = []
        for i, blocks in enumerate(self.encoder):
            for block in blocks:
                h = block(h, *next(pairs))
            skips.append(h)
            if i < len(self.down):
                h = self.down_norms[i](_channels_last(self.down[i](_channels_first(h))))
        decoded = []
        for up, fuse, blocks, level in zip(self.up, self.fuse, self.decoder, self.decoder_levels, strict=True):
            h = _channels_last(up(_channels_first(h)))
            h = fuse(torch.cat([h, skips[level]], dim=-1))
            for block in blocks:
                h = block(h, *next(pairs))
            decoded.append(h)
        logits = self.head(_channels_first(self.final_norm(h)))
        return {
            "encoder": [_channels_first(s) for s in skips],
            "decoder": [_channels_first(d) for d in decoded],
            "logits": logits,
        }

    def forward(self, x: torch.Tensor, modality: str | None = None, scales: torch.Tensor | None = None) -> torch.Tensor:
        return self.features_dict(x, modality, scales)["logits"]  # type: ignore[return-value]


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class SliceWiseTransformerUNet(SliceWise):
    """A 2D :class:`TransformerUNet` applied slice by slice (``[B, 1, Z, Y, X]`` -> ``[B, C, Z, Y, X]``),
    each axial slice seen with ``context`` neighbours on either side as channels (the paper: three
    adjacent slices, ``context = 1``). Methods that work per image use :meth:`image_batch` and
    :meth:`label_batch` to get the 2D batch the core network runs on."""

    net: TransformerUNet

    @property
    def core(self) -> TransformerUNet:
        return self.net

    @property
    def channel_scales(self) -> ChannelScales | None:
        return self.net.channel_scales

    def image_batch(self, x: torch.Tensor) -> torch.Tensor:
        return self._slices(x)

    def label_batch(self, label: torch.Tensor) -> torch.Tensor:
        b, c, z = label.shape[:3]
        return label.permute(0, 2, 1, 3, 4).reshape(b * z, c, *label.shape[3:])

    def forward(self, x: torch.Tensor, modality: str | None = None, scales: torch.Tensor | None = None) -> torch.Tensor:
        b, _, z = x.shape[:3]
        out = self.net(self._slices(x), modality, scales)
        return out.reshape(b, z, out.shape[1], *out.shape[2:]).permute(0, 2, 1, 3, 4)


def transformer_unet3d(**params) -> TransformerUNet:
    """nnFormer-like 3D Transformer U-Net (patch ``(2, 4, 4)``, windows of 4 tokens per axis by default)."""
    return TransformerUNet(spatial_dims=3, **params)


def transformer_unet2d(context: int = 1, **params) -> SliceWiseTransformerUNet:
    """Swin-UNet-like 2D Transformer U-Net on ``2 * context + 1`` adjacent slices (patch 4, window 7)."""
    if context < 0:
        raise ConfigError(f"network parameter context must be 0 or more slices, got {context}.")
    params["in_channels"] = 2 * context + 1
    return SliceWiseTransformerUNet(TransformerUNet(spatial_dims=2, **params), context=context)
