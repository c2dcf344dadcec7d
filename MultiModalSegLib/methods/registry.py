"""The method registry: a method is one file with a class registered by name."""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from ..errors import ConfigError
from ..networks.member_ensemble import with_members

METHODS: dict[str, type] = {}


def register_method(cls: type) -> type:
    METHODS[cls.name] = cls
    return cls


def get_method(name: str) -> type:
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; choose one of {sorted(METHODS)}.")
    return METHODS[name]


def build_method(name: str, network: Mapping, modalities: list[str], n_classes: int, **params) -> nn.Module:
    return get_method(name)(network, modalities, n_classes, **params)


def build_inference_network(metadata: Mapping) -> nn.Module:
    """The untrained inference network a bundle's metadata describes (weights loaded separately); for a
    bundle listing ``members``, an ensemble of that many (:mod:`..networks.member_ensemble`)."""
    cls = get_method(metadata["method"])
    return with_members(metadata, lambda: cls.build_inference_network(metadata["network"], list(metadata["modalities"])))
