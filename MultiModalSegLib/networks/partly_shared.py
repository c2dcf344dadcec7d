"""U-Nets with some blocks duplicated per modality: the "Y"- and "X"-shaped baselines of the UMMKD
paper (Dou et al., TMI 2020, Fig. 1 a-b and Sec. IV-B).

The U-Net of :mod:`.unet` is cut into five groups of layers: ``encoder`` (every encoder level
above the deepest), ``down`` (the deepest level's first, strided convolution with its
normalisation), ``middle`` (the deepest level's second convolution with its normalisation: the
layer between the last down-sampling and the first up-sampling), ``decoder`` (the up-sampling
blocks) and ``head`` (the 1x1x1 output convolution). A group named in ``specific`` holds one copy
of its layers per modality; the others are shared. Skip connections link each encoder level to the
decoder level of the same resolution, whatever is shared. The computation is the U-Net's in every
case; only which parameters exist once or once per modality changes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ..errors import ConfigError, InputError
from .norms import is_segments, run_by_segments
from .slicewise import SliceWise
from .unet import UNet

GROUPS = ("encoder", "down", "middle", "decoder", "head")


class PerModality(nn.Module):
    """One copy of a block per modality; :attr:`active` picks the one ``forward`` runs (for a
    mixed batch, :data:`.norms.Segments`: each modality's copy runs on its own items)."""

    def __init__(self, blocks: Mapping[str, nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.ModuleDict(dict(blocks))
        self.active: str | None = None

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        if is_segments(self.active):
            try:
                return run_by_segments(self.blocks, self.active, *args)  # type: ignore[arg-type]
            except KeyError as err:
                raise InputError(f"this model has no layers for some modality of the batch: {err.args[0]}.") from err
        if self.active not in self.blocks:
            raise InputError(f"this model has no layers for modality {self.active!r}; it knows {list(self.blocks)}.")
        return self.blocks[self.active](*args)


class PartlySharedUNet(UNet):
    """:class:`.UNet` whose layer groups named in ``specific`` are per modality (see the module
    docstring). ``specific=()`` is the plain shared U-Net; every group specific is one U-Net per
    modality. Called as ``net(image, modality)``; ``features_dict`` works as for the U-Net.
    """

    def __init__(self, specific: Sequence[str] = ("encoder",), **params) -> None:
        super().__init__(**params)
        unknown = sorted(set(specific) - set(GROUPS))
        if unknown:
            raise ConfigError(f"unknown layer groups {unknown}; a partly shared U-Net splits {list(GROUPS)}.")
        if len(self.features) < 2:
            raise ConfigError("a partly shared U-Net needs at least two levels: give 'features' two or more widths.")
        self.specific = [g for g in GROUPS if g in specific]
        self.modalities = list(params.get("modalities", ("CT", "MR")))
        if not self.specific:
            return
        # Fresh U-Nets for the other modalities' copies (the first modality keeps this one's layers).
        copies = {m: self if i == 0 else UNet(**params) for i, m in enumerate(self.modalities)}

        def split(get) -> PerModality:
            return PerModality({m: get(net) for m, net in copies.items()})

        def split_if(group: str, get) -> nn.Module:
            return split(get) if group in self.specific else get(self)

        last = len(self.features) - 1
        for i in range(last):
            self.encoder[i] = split_if("encoder", lambda net, i=i: net.encoder[i])
        if "down" in self.specific and "middle" in self.specific:
            self.encoder[last] = split(lambda net: net.encoder[last])
        elif "down" in self.specific or "middle" in self.specific:
            # The deepest UnetBasicBlock run as its two halves: conv1-norm1-act, conv2-norm2-act.
            def half(net: UNet, n: int) -> nn.Module:
                block = net.encoder[last]
                return nn.Sequential(getattr(block, f"conv{n}"), getattr(block, f"norm{n}"), block.lrelu)

            self.encoder[last] = nn.Sequential(
                split_if("down", lambda net: half(net, 1)), split_if("middle", lambda net: half(net, 2))
            )
        for i in range(len(self.decoder)):
            self.decoder[i] = split_if("decoder", lambda net, i=i: net.decoder[i])
        self.head = split_if("head", lambda net: net.head)

    def features_dict(self, x: torch.Tensor, modality: str | None = None) -> dict[str, list[torch.Tensor] | torch.Tensor]:
        for block in self.modules():
            if isinstance(block, PerModality):
                block.active = modality
        return super().features_dict(x, modality)


def partly_shared_network(name: str, specific: Sequence[str], **params) -> nn.Module:
    """The partly shared counterpart of the registered U-Net ``name`` (``unet3d``, ``unet2d`` or
    ``unet2.5d``, with the same parameters); the 2D ones are wrapped in :class:`.SliceWise`."""
    params = dict(params)
    if name == "unet3d":
        return PartlySharedUNet(spatial_dims=3, specific=specific, **params)
    if name in ("unet2d", "unet2.5d"):
        context = int(params.pop("context", 1)) if name == "unet2.5d" else 0
        params["in_channels"] = 2 * context + 1
        return SliceWise(PartlySharedUNet(spatial_dims=2, specific=specific, **params), context=context)
    raise ConfigError(f"network {name!r} cannot be split per modality; use 'unet3d', 'unet2d' or 'unet2.5d'.")
