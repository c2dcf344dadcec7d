"""Network registry: every network is built by name from JSON-able parameters and called as
``net(image, modality)`` on ``[B, 1, Z, Y, X]`` volumes."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from .norms import ModalityNorm, add_modality, set_modality
from .slicewise import SliceWise
from .transformer_unet import TransformerUNet, transformer_unet2d, transformer_unet3d
from .unet import UNet

NETWORKS: dict[str, Callable[..., nn.Module]] = {}


def register_network(name: str) -> Callable:
    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        NETWORKS[name] = fn
        return fn

    return deco


@register_network("unet3d")
def unet3d(**params) -> nn.Module:
    return UNet(spatial_dims=3, **params)


@register_network("unet2d")
def unet2d(**params) -> nn.Module:
    return SliceWise(UNet(spatial_dims=2, **params), context=0)


@register_network("unet2.5d")
def unet25d(context: int = 1, **params) -> nn.Module:
    params["in_channels"] = 2 * context + 1
    return SliceWise(UNet(spatial_dims=2, **params), context=context)


register_network("transformer_unet3d")(transformer_unet3d)
register_network("transformer_unet2d")(transformer_unet2d)


def build_network(name: str, **params) -> nn.Module:
    """Build a registered network; unknown names raise a ``KeyError`` listing the known ones."""
    if name not in NETWORKS:
        raise KeyError(f"unknown network {name!r}; known: {sorted(NETWORKS)}")
    return NETWORKS[name](**params)


__all__ = ["NETWORKS", "ModalityNorm", "SliceWise", "TransformerUNet", "UNet", "add_modality", "build_network", "register_network", "set_modality"]
