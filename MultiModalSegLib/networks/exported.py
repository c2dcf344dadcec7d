"""The network each method exports to a bundle, built from the bundle's metadata alone.

Inference needs only this module: no method, no loss, no training code is imported to segment.
Each method's :meth:`~MultiModalSegLib.methods.Method.build_inference_network` builds its network
through :data:`EXPORTED_NETWORKS` too, so training and inference construct the same module. A new
method adds its entry here (``Testing/library/networks/test_exported.py`` fails until it does).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from torch import nn

from ..errors import BundleError
from . import build_network
from .cmc import CMCNetwork
from .member_ensemble import with_members
from .mulmodseg import MulModSegNet
from .partly_shared import partly_shared_network
from .router import ModalityRouter

Builder = Callable[[Mapping, Sequence[str]], nn.Module]


def shared_network(spec: Mapping, modalities: Sequence[str]) -> nn.Module:
    """The registered network ``spec["name"]`` itself (its parameters name its modalities)."""
    return build_network(spec["name"], **spec["params"])


def one_network_per_modality(spec: Mapping, modalities: Sequence[str]) -> nn.Module:
    """A copy of the registered network for each modality, chosen by the input's modality."""
    return ModalityRouter({m: build_network(spec["name"], **{**spec["params"], "modalities": [m]}) for m in modalities})


def cmc_network(spec: Mapping, modalities: Sequence[str]) -> nn.Module:
    return CMCNetwork(**spec["params"])


def mulmodseg_network(spec: Mapping, modalities: Sequence[str]) -> nn.Module:
    return MulModSegNet(backbone=spec["name"], **spec["params"])


def partly_shared(specific: tuple[str, ...]) -> Builder:
    """A U-Net whose layer groups ``specific`` are per modality and the rest shared."""

    def build(spec: Mapping, modalities: Sequence[str]) -> nn.Module:
        return partly_shared_network(spec["name"], specific, **{**spec["params"], "modalities": list(modalities)})

    return build


EXPORTED_NETWORKS: dict[str, Builder] = {
    "cmc": cmc_network,
    "csa": shared_network,
    "individual": one_network_per_modality,
    "joint": shared_network,
    "joint_kd": shared_network,
    "lssc": shared_network,
    "mulmodseg": mulmodseg_network,
    "ummkd": shared_network,
    "x_shaped": partly_shared(("encoder", "down", "decoder", "head")),
    "y_shaped": partly_shared(("encoder",)),
}


def build_exported_network(method: str, spec: Mapping, modalities: Sequence[str]) -> nn.Module:
    """The untrained network ``method`` exports for ``spec`` (a method with no entry: the registered network)."""
    return EXPORTED_NETWORKS.get(method, shared_network)(spec, modalities)


def build_inference_network(metadata: Mapping) -> nn.Module:
    """The untrained inference network a bundle's metadata describes (weights are loaded separately);
    for a bundle listing ``members``, an ensemble of that many (:mod:`.member_ensemble`)."""
    method = metadata["method"]
    if method not in EXPORTED_NETWORKS:
        raise BundleError(
            f"the bundle's method {method!r} is not one this version of MultiModalSegLib knows "
            f"({', '.join(sorted(EXPORTED_NETWORKS))}); update MultiModalSegLib or choose another model."
        )
    return with_members(metadata, lambda: EXPORTED_NETWORKS[method](metadata["network"], list(metadata["modalities"])))
