"""CMC's network (Zhou et al., MICCAI 2024, Fig. 1): modality-specific encoders, modality-independent
awareness (MIA) modules, a fusion layer and modality-specific decoders.

The paper's encoders are fine-tuned ViTs of a foundation model (SAM-Med3D) with adapters; here each
encoder is the convolutional encoder of :class:`.unet.UNet` (MONAI dynamic-U-Net blocks), so the
method trains from scratch and runs on a CPU; a pretrained encoder state dict can be loaded into
it (``pretrained_encoder`` of the method). Each modality ``m`` has an encoder ``E^m`` whose deepest
feature map is the distinctive semantic feature ``F_ds^m``, an MIA module giving ``F_mia^m``, and a
decoder ``D^m`` fed with the fused bottleneck and ``E^m``'s skip connections.

Single input (inference, one volume of one modality): the fusion layer receives the modality's own
MIA feature twice, ``fuse(F_mia^m, F_mia^m)``. Training runs this path too (see
:class:`..methods.cmc.CMC`), so the exported network never sees a fusion input it was not trained on.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks.dynunet_block import UnetBasicBlock, UnetOutBlock, UnetUpBlock
from monai.networks.layers.factories import Conv, Pool
from torch import nn

from ..errors import InputError
from .norms import set_modality
from .unet import norm_spec


class AwarenessModule(nn.Module):
    """Modality-independent awareness (MIA): two 3x3x3 convolutions whose output is re-weighted by
    a channel attention (squeeze-and-excitation, reduction 4) and a spatial attention (a 1x1x1
    convolution and a sigmoid), added to the input (residual). The paper names the ingredients
    ("modality-aware attention, 3D convolutional layers") but not their arrangement; this is ours."""

    def __init__(self, spatial_dims: int, channels: int, norm: str | tuple) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        pool = Pool[Pool.ADAPTIVEAVG, spatial_dims]
        hidden = max(channels // 4, 1)
        self.block = UnetBasicBlock(spatial_dims, channels, channels, 3, 1, norm)
        self.channel_gate = nn.Sequential(pool(1), conv(channels, hidden, 1), nn.ReLU(inplace=True), conv(hidden, channels, 1), nn.Sigmoid())
        self.spatial_gate = nn.Sequential(conv(channels, 1, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y * self.channel_gate(y) * self.spatial_gate(y)


class CMCNetwork(nn.Module):
    """Per-modality encoders and decoders around MIA modules and one shared fusion layer.

    The fusion layer is a 1x1x1 convolution from the concatenation ``[F_mia^self, F_mia^other]``
    (2C channels) to C channels followed by a LeakyReLU; it is shared by all modalities, the one
    place where they meet. Called as ``net(image, modality)`` on one modality (single-input path).
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 5,
        features: Sequence[int] = (16, 32, 64, 128),
        norm: str = "instance",
        modalities: Sequence[str] = ("CT", "MR"),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.spatial_dims = spatial_dims
        self.features = list(features)
        self.modalities = list(modalities)
        n = norm_spec(norm, modalities)
        drop = dropout or None
        self.encoders = nn.ModuleDict()
        self.aware = nn.ModuleDict()
        self.decoders = nn.ModuleDict()
        self.heads = nn.ModuleDict()
        for m in self.modalities:
            enc, prev = nn.ModuleList(), in_channels
            for i, ch in enumerate(features):
                enc.append(UnetBasicBlock(spatial_dims, prev, ch, 3, 1 if i == 0 else 2, n, dropout=drop))
                prev = ch
            self.encoders[m] = enc
            self.aware[m] = AwarenessModule(spatial_dims, prev, n)
            dec = nn.ModuleList()
            for ch in reversed(features[:-1]):
                dec.append(UnetUpBlock(spatial_dims, prev, ch, 3, 1, 2, n, dropout=drop))
                prev = ch
            self.decoders[m] = dec
            self.heads[m] = UnetOutBlock(spatial_dims, prev, out_channels)
        deepest = features[-1]
        self.fusion = nn.Sequential(Conv[Conv.CONV, spatial_dims](2 * deepest, deepest, 1), nn.LeakyReLU(0.01, inplace=True))

    @torch.no_grad()
    def init_new_modules_as_identity(self) -> None:
        """Make the awareness modules and the fusion layer pass the bottleneck through: the last
        normalisation of each MIA block starts at zero (so ``F_mia = F_ds``, a zero-initialised
        residual) and the fusion averages its two inputs. A network whose encoders, decoders and
        heads were copied from a U-Net with the same normalisation (:mod:`..training.warm_start`) then
        starts from that U-Net's function, up to a second leaky ReLU on the bottleneck's negative part
        (with instance normalisation, CMC's default, only the affine parameters carry over)."""
        for module in self.aware.values():
            for param in module.block.norm2.parameters():
                param.zero_()
        conv = self.fusion[0]
        channels = conv.out_channels
        conv.weight.zero_()
        conv.bias.zero_()
        eye = torch.arange(channels)
        conv.weight[eye, eye] = 0.5
        conv.weight[eye, eye + channels] = 0.5

    @property
    def divisor(self) -> int:
        return 2 ** (len(self.features) - 1)

    def _check(self, modality: str | None) -> str:
        if modality not in self.encoders:
            raise InputError(f"this model has no encoder for modality {modality!r}; it knows {self.modalities}.")
        return modality  # type: ignore[return-value]

    def encode(self, x: torch.Tensor, modality: str) -> list[torch.Tensor]:
        """``E^m``: the feature map of every level; the last one is ``F_ds^m``."""
        set_modality(self, self._check(modality))
        skips = []
        for block in self.encoders[modality]:
            x = block(x)
            skips.append(x)
        return skips

    def awareness(self, f_ds: torch.Tensor, modality: str) -> torch.Tensor:
        """``F_mia^m`` from ``F_ds^m``."""
        set_modality(self, self._check(modality))
        return self.aware[modality](f_ds)

    def fuse(self, f_self: torch.Tensor, f_other: torch.Tensor) -> torch.Tensor:
        """The fusion layer; ``f_other`` is ``f_self`` on the single-input path."""
        return self.fusion(torch.cat([f_self, f_other], dim=1))

    def decode(self, fused: torch.Tensor, skips: Sequence[torch.Tensor], modality: str) -> torch.Tensor:
        """``D^m`` on the fused bottleneck with the encoder's skip connections; returns logits."""
        set_modality(self, self._check(modality))
        x = fused
        for block, skip in zip(self.decoders[modality], reversed(list(skips[:-1])), strict=True):
            x = block(x, skip)
        return self.heads[modality](x)

    def forward(self, x: torch.Tensor, modality: str | None = None) -> torch.Tensor:
        skips = self.encode(x, self._check(modality))
        f = self.awareness(skips[-1], modality)  # type: ignore[arg-type]
        return self.decode(self.fuse(f, f), skips, modality)  # type: ignore[arg-type]


def _register() -> None:
    from . import register_network  # the package is loaded before any of its modules

    register_network("cmc")(CMCNetwork)


_register()
