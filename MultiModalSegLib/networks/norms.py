"""Modality-specific normalisation: shared convolutions, one normalisation layer set per modality.

This is the "Chilopod" design of UMMKD (Dou et al., TMI 2020, Sec. III-A): every convolution kernel
is shared by CT and MR, and each modality keeps its own normalisation statistics and affine
parameters. The layers are registered in MONAI's ``Norm`` factory as ``modality_batch`` and
``modality_instance``, so any MONAI block that takes ``norm_name`` can use them, e.g.
``norm_name=("modality_batch", {"modalities": ("CT", "MR")})``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping, Sequence

import torch
from monai.networks.layers.factories import Norm
from torch import nn
from torch.nn import functional as F

Segments = tuple[tuple[str, int], ...]  # a mixed batch: (modality, number of items), in batch order


def is_segments(modality: object) -> bool:
    """Whether ``modality`` describes a mixed batch (:data:`Segments`) rather than one modality."""
    return isinstance(modality, tuple) and all(isinstance(s, tuple) and len(s) == 2 for s in modality)


def run_by_segments(blocks: Mapping[str, nn.Module], segments: Segments, *args: torch.Tensor) -> torch.Tensor:
    """Each modality's block on its own items of a mixed batch (every argument split along the
    batch axis by ``segments``), the outputs concatenated back in batch order."""
    unknown = [m for m, _ in segments if m not in blocks]
    if unknown:
        raise KeyError(f"modalities {unknown} have no layers here (known: {list(blocks)})")
    sizes = [n for _, n in segments]
    pieces = [torch.split(a, sizes) for a in args]
    return torch.cat([blocks[m](*(p[i] for p in pieces)) for i, (m, _) in enumerate(segments)])


class InstanceNorm3d(nn.InstanceNorm3d):
    """``nn.InstanceNorm3d`` that normalises channels-last activations in their layout.

    Instance normalisation is group normalisation with one channel per group; on channels-last input
    (training on the CPU, :func:`..device.cpu_channels_last`) it is computed as such, which keeps the
    layout, where ``nn.InstanceNorm3d`` would copy the activations to the default layout and back. Each
    channel's mean is subtracted first: PyTorch's channels-last group normalisation on the CPU takes the
    variance in one pass, which loses the variance of a channel far from zero (an error of 10 in the
    normalised values of a channel at 100 +- 0.01, ``Testing/library/networks/test_norms.py``), and the
    normalisation does not change under that shift, so the values and gradients are those of the
    uncentred input. The parameters, and so the weights files, are ``nn.InstanceNorm3d``'s.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.track_running_stats or x.dim() != 5 or x.is_contiguous() or not x.is_contiguous(memory_format=torch.channels_last_3d):
            return super().forward(x)
        centred = x - x.mean(dim=(2, 3, 4), keepdim=True).detach()
        return F.group_norm(centred, self.num_features, self.weight, self.bias, self.eps)


class ModalityNorm(nn.Module):
    """One ``base`` normalisation layer per modality; ``active`` picks the one used in ``forward``.

    The active modality is set on the whole network at once with :func:`set_modality` (networks
    do it in their ``forward(x, modality)``). It is one modality's name, or for a batch that mixes
    modalities a :data:`Segments` tuple: each modality's layers then normalise its own items.
    """

    def __init__(
        self,
        num_features: int,
        modalities: Sequence[str] = ("CT", "MR"),
        base: str = "batch",
        spatial_dims: int = 3,
        affine: bool = True,
    ) -> None:
        super().__init__()
        if not modalities:
            raise ValueError("ModalityNorm needs at least one modality.")
        self.num_features = num_features
        self.base = base
        self.spatial_dims = spatial_dims
        self.affine = affine
        self.norms = nn.ModuleDict({m: self._make() for m in modalities})
        self.active: str | None = None

    def _make(self) -> nn.Module:
        if self.base == "instance" and self.spatial_dims == 3:
            return InstanceNorm3d(self.num_features, affine=self.affine)
        return Norm[self.base, self.spatial_dims](self.num_features, affine=self.affine)

    @property
    def modalities(self) -> list[str]:
        return list(self.norms.keys())

    def add_modality(self, name: str, copy_from: str | None = None) -> None:
        """Add a normalisation set for a new modality, initialised from ``copy_from`` when given."""
        layer = self._make().train(self.training)  # a new layer must follow the network's train/eval mode
        if copy_from is not None:
            layer.load_state_dict(self.norms[copy_from].state_dict())
        reference = next(self.norms[self.modalities[0]].parameters(), None)
        self.norms[name] = layer if reference is None else layer.to(reference.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.active is None:
            raise RuntimeError(
                "A modality-specific normalisation layer was called without a modality; "
                "call the network as net(image, modality)."
            )
        if is_segments(self.active):
            return run_by_segments(self.norms, self.active, x)
        if self.active not in self.norms:
            raise KeyError(f"modality {self.active!r} has no normalisation layers here (known: {self.modalities})")
        return self.norms[self.active](x)

    def extra_repr(self) -> str:
        return f"{self.num_features}, base={self.base}, modalities={self.modalities}"


def modality_norms(module: nn.Module) -> Iterator[ModalityNorm]:
    return (m for m in module.modules() if isinstance(m, ModalityNorm))


def set_modality(module: nn.Module, modality: str | Segments | None) -> None:
    """Make every :class:`ModalityNorm` inside ``module`` use ``modality``'s layers (or, given
    :data:`Segments`, each modality's layers on its part of the batch)."""
    for layer in modality_norms(module):
        layer.active = modality


def add_modality(module: nn.Module, name: str, copy_from: str | None = None) -> None:
    """Give every :class:`ModalityNorm` inside ``module`` a layer set for a new modality."""
    for layer in modality_norms(module):
        layer.add_modality(name, copy_from)


def _factory(base: str):
    def factory(dim: int):
        return functools.partial(ModalityNorm, base=base, spatial_dims=dim)

    factory.__doc__ = f"One {base} normalisation layer per modality (shared convolutions)."
    return factory


for _base in ("batch", "instance"):
    if f"MODALITY_{_base.upper()}" not in Norm.names:
        Norm.add_factory_callable(f"modality_{_base}", _factory(_base))
