"""A U-Net built from MONAI's dynamic-U-Net blocks, with the normalisation chosen by name.

``norm`` is ``"batch"``, ``"instance"``, ``"modality_batch"`` or ``"modality_instance"`` (see
:mod:`.norms`). The network is called as ``net(image, modality)``; the modality only matters for
modality-specific normalisation; it may also be a :data:`.norms.Segments` tuple, for a batch that
concatenates several modalities' images (each modality-specific layer then acts on its own items,
shared layers on the whole batch). :meth:`UNet.features` exposes encoder and decoder feature maps
for methods whose losses act on them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks.dynunet_block import UnetBasicBlock, UnetOutBlock, UnetUpBlock
from torch import nn

from .norms import set_modality

NORM_NAMES = ("batch", "instance", "modality_batch", "modality_instance")


def norm_spec(norm: str, modalities: Sequence[str]) -> str | tuple:
    """MONAI ``norm_name`` for one of :data:`NORM_NAMES`."""
    if norm not in NORM_NAMES:
        raise ValueError(f"unknown normalisation {norm!r}; choose one of {NORM_NAMES}")
    if norm.startswith("modality_"):
        return (norm, {"modalities": tuple(modalities)})
    return (norm, {"affine": True})


class UNet(nn.Module):
    """Encoder-decoder with skip connections; ``len(features)`` resolution levels, stride 2 between."""

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
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.features = list(features)
        n = norm_spec(norm, modalities)
        drop = dropout or None
        self.encoder = nn.ModuleList()
        prev = in_channels
        for i, ch in enumerate(features):
            stride = 1 if i == 0 else 2
            self.encoder.append(UnetBasicBlock(spatial_dims, prev, ch, 3, stride, n, dropout=drop))
            prev = ch
        self.decoder = nn.ModuleList()
        for ch in reversed(features[:-1]):
            self.decoder.append(UnetUpBlock(spatial_dims, prev, ch, 3, 1, 2, n, dropout=drop))
            prev = ch
        self.head = UnetOutBlock(spatial_dims, prev, out_channels)

    @property
    def divisor(self) -> int:
        """Input sizes must be multiples of this (sliding windows take care of it)."""
        return 2 ** (len(self.features) - 1)

    def features_dict(self, x: torch.Tensor, modality: str | None = None) -> dict[str, list[torch.Tensor] | torch.Tensor]:
        """Run the network and return ``{"encoder": [...], "decoder": [...], "logits": tensor}``."""
        set_modality(self, modality)
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
        decoded = []
        for block, skip in zip(self.decoder, reversed(skips[:-1]), strict=True):
            x = block(x, skip)
            decoded.append(x)
        return {"encoder": skips, "decoder": decoded, "logits": self.head(x)}

    def forward(self, x: torch.Tensor, modality: str | None = None) -> torch.Tensor:
        return self.features_dict(x, modality)["logits"]  # type: ignore[return-value]
