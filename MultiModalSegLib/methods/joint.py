"""Baseline "Joint": one network, every parameter shared by all modalities (UMMKD paper, Table I)."""

from __future__ import annotations

from .base import Method
from .registry import register_method


@register_method
class Joint(Method):
    """Plain joint training: the sum of the modalities' Dice+CE losses on a fully shared network.

    Normalisation is shared too (``batch`` by default); a modality-specific ``norm`` in the
    config turns this into UMMKD without its KD term (the paper's ablation).
    """

    name = "joint"
    paper = "Dou et al., TMI 2020 (UMMKD), baseline Joint"
    equations = "-"
    inference_summary = "one network, every parameter shared (shared BatchNorm)"
