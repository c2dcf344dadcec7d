"""One network per modality behind a single ``forward(image, modality)``."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ..errors import InputError


class ModalityRouter(nn.Module):
    """One network per modality behind a single ``forward(image, modality)``."""

    def __init__(self, networks: Mapping[str, nn.Module]) -> None:
        super().__init__()
        self.nets = nn.ModuleDict(dict(networks))

    @property
    def divisor(self) -> int:
        return max(getattr(n, "divisor", 1) for n in self.nets.values())

    def forward(self, x: torch.Tensor, modality: str | None = None) -> torch.Tensor:
        if modality not in self.nets:
            raise InputError(f"this model has no network for modality {modality!r}; it knows {list(self.nets)}.")
        return self.nets[modality](x, modality)
