"""Warm start: begin training one method from another method's exported U-Net weights.

The U-Net family of methods (``joint``, ``joint_kd``, ``ummkd``, ``csa``, ``y_shaped``,
``x_shaped``, ``individual``, ``mulmodseg``) hold the same U-Net layers, arranged differently: shared, with one
normalisation per modality (``...norm1.norms.MR.weight``), with whole blocks per modality
(``encoder.0.blocks.CT...``), one network per modality (``nets.MR.encoder...``), one encoder,
decoder and head per modality around new modules (``cmc``: ``encoders.CT.0...``, whose awareness
and fusion modules have no U-Net counterpart) or inside a wrapper (``backbone.unet...``). Every parameter name is reduced to a *canonical* U-Net name and
the modality it belongs to (or none, when shared); a target tensor takes the source tensor with
the same canonical name, preferring the one of its own modality, then the shared one, then the
mean over the source's modalities (a shared layer started from per-modality normalisations).
Tensors with no counterpart (a dynamic head, text embeddings) keep their fresh initialisation,
except in a network that can start its own modules as pass-throughs (``cmc``:
``init_new_modules_as_identity``), which then starts from the source U-Net's function.

This is an initialisation choice only; the training losses are the target method's own.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import ConfigError

# modality-routing segments inserted by the methods' networks, and wrapper prefixes
_MODALITY_SEGMENT = re.compile(r"(?:^|\.)(?:blocks|norms|nets)\.([^.]+)(?=\.|$)")
_WRAPPERS = ("backbone.unet.", "backbone.", "unet.")
# per-modality containers named in the plural: encoders.<M>.<i> is the U-Net's encoder.<i>
_PLURAL = re.compile(r"^(encoder|decoder|head)s\.([^.]+)\.")
# the partly shared U-Net's deepest level run as two halves: encoder.L.<half>.<0 conv | 1 norm>
_HALF = re.compile(r"^encoder\.(\d+)\.([01])\.([01])\.")
MIN_COVERAGE = 0.5  # below this fraction of the target's parameters found, the source is the wrong network


def canonical_key(key: str) -> tuple[str, str | None]:
    """(plain U-Net name, modality or ``None``) of one state-dict key."""
    modality = None
    plural = _PLURAL.match(key)
    if plural:
        return canonical_key(plural.group(1) + "." + key[plural.end():])[0], plural.group(2)
    match = _MODALITY_SEGMENT.search(key)
    if match:
        modality = match.group(1)
        key = key[: match.start()] + ("." if match.start() > 0 else "") + key[match.end() + 1:]
        key = key.lstrip(".")
    for prefix in _WRAPPERS:
        if key.startswith(prefix):
            key = key[len(prefix):]
            break
    half = _HALF.match(key)
    if half:
        level, h, part = half.groups()
        key = f"encoder.{level}.{'conv' if part == '0' else 'norm'}{int(h) + 1}." + key[half.end():]
    return key, modality


@dataclass
class WarmStartReport:
    """What a warm start did: tensors copied, averaged over modalities, or left fresh."""

    copied: list[str] = field(default_factory=list)
    averaged: list[str] = field(default_factory=list)
    fresh: list[str] = field(default_factory=list)

    @property
    def coverage(self) -> float:
        total = len(self.copied) + len(self.averaged) + len(self.fresh)
        return (len(self.copied) + len(self.averaged)) / total if total else 0.0

    def summary(self) -> str:
        return (f"{len(self.copied)} tensors copied, {len(self.averaged)} averaged over modalities, "
                f"{len(self.fresh)} left at their initialisation")


def _index(state: Mapping[str, torch.Tensor]) -> dict[str, dict[str | None, torch.Tensor]]:
    index: dict[str, dict[str | None, torch.Tensor]] = {}
    for key, value in state.items():
        name, modality = canonical_key(key)
        index.setdefault(name, {})[modality] = value
    return index


def _pick(options: dict[str | None, torch.Tensor], modality: str | None, shape: torch.Size) -> tuple[torch.Tensor | None, bool]:
    """(tensor, averaged) for a target of ``modality`` and ``shape`` among ``options``."""
    fitting = {m: t for m, t in options.items() if t.shape == shape}
    if modality in fitting:
        return fitting[modality], False
    if None in fitting:
        return fitting[None], False
    if not fitting:
        return None, False
    values = list(fitting.values())
    if not torch.is_floating_point(values[0]):
        return values[0], False  # e.g. num_batches_tracked
    return torch.stack([v.float() for v in values]).mean(0).to(values[0].dtype), True


def warm_start(network: nn.Module, source_state: Mapping[str, torch.Tensor], source: str = "the source bundle") -> WarmStartReport:
    """Copy ``source_state`` into ``network`` by canonical names (see the module docstring).

    Raises :class:`ConfigError` when less than half of ``network``'s tensors find a counterpart of
    the same shape: the source is another architecture or other widths.
    """
    index = _index(source_state)
    report = WarmStartReport()
    new_state = {}
    for key, value in network.state_dict().items():
        name, modality = canonical_key(key)
        picked, averaged = _pick(index.get(name, {}), modality, value.shape)
        if picked is None:
            report.fresh.append(key)
            continue
        new_state[key] = picked.to(value.dtype)
        (report.averaged if averaged else report.copied).append(key)
    if report.coverage < MIN_COVERAGE:
        example = report.fresh[0] if report.fresh else "?"
        raise ConfigError(
            f"{source} does not fit this network: only {report.coverage:.0%} of its tensors have a counterpart of the same "
            f"shape (e.g. nothing for {example!r}); start from a bundle of the same network and widths."
        )
    network.load_state_dict(new_state, strict=False)
    identity = getattr(network, "init_new_modules_as_identity", None)
    if report.fresh and callable(identity):  # e.g. cmc: its own modules start as pass-throughs
        identity()
    return report


def warm_start_method(method: nn.Module, source_state: Mapping[str, torch.Tensor], source: str = "the source bundle") -> WarmStartReport:
    """:func:`warm_start` into ``method``'s exported network, which must be one of its modules."""
    net = method.inference_network()
    if not any(net is m for m in method.modules()):
        name = getattr(method, "name", type(method).__name__)
        raise ConfigError(f"method {name} exports a network derived from its parameters; it cannot be warm-started from {source}.")
    return warm_start(net, source_state, source)
