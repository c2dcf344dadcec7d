"""2D and 2.5D networks applied to volumes slice by slice, so every network takes and returns 3D."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .norms import is_segments


class SliceWise(nn.Module):
    """Wrap a 2D network so it maps ``[B, 1, Z, Y, X]`` volumes to ``[B, C, Z, Y, X]`` logits.

    With ``context = k`` each axial slice is stacked with its ``k`` neighbours on either side as
    input channels (2.5D; the 2D network then has ``2k + 1`` input channels); the first and last
    slices repeat the edge slice. ``context = 0`` is a plain 2D network.
    """

    def __init__(self, net2d: nn.Module, context: int = 0) -> None:
        super().__init__()
        self.net = net2d
        self.context = context

    @property
    def divisor(self) -> int:
        return getattr(self.net, "divisor", 1)

    def _slices(self, x: torch.Tensor) -> torch.Tensor:
        b, c, z, y, xs = x.shape
        if self.context:
            padded = F.pad(x, (0, 0, 0, 0, self.context, self.context), mode="replicate")
            x = torch.cat([padded[:, :, i : i + z] for i in range(2 * self.context + 1)], dim=1)
        return x.permute(0, 2, 1, 3, 4).reshape(b * z, x.shape[1], y, xs)

    @staticmethod
    def _per_slice(modality, z: int):
        """A mixed batch's segments counted in slices (each volume gives ``z`` slices, in order)."""
        return tuple((m, n * z) for m, n in modality) if is_segments(modality) else modality

    def forward(self, x: torch.Tensor, modality: str | None = None) -> torch.Tensor:
        b, _, z = x.shape[:3]
        out = self.net(self._slices(x), self._per_slice(modality, z))
        return out.reshape(b, z, out.shape[1], *out.shape[2:]).permute(0, 2, 1, 3, 4)

    def features_dict(self, x: torch.Tensor, modality: str | None = None) -> dict:
        """The 2D network's features, each reshaped back to ``[B, C, Z, Y, X]``."""
        b, _, z = x.shape[:3]
        feats = self.net.features_dict(self._slices(x), self._per_slice(modality, z))

        def to3d(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, z, t.shape[1], *t.shape[2:]).permute(0, 2, 1, 3, 4)

        return {k: ([to3d(t) for t in v] if isinstance(v, list) else to3d(v)) for k, v in feats.items()}
