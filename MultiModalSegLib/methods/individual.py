"""Baseline "Individual": a separate network per modality, nothing shared (UMMKD paper, Table I)."""

from __future__ import annotations

import copy

from ..networks.norms import modality_norms
from .base import Method
from .registry import register_method


@register_method
class Individual(Method):
    name = "individual"
    paper = "Dou et al., TMI 2020 (UMMKD), baseline Individual"
    equations = "-"
    loss_summary = "Dice + CE per modality, each on its own network (weights 1, 1)"
    inference_summary = "one network per modality; the input's modality picks it"

    def _add_modality_parameters(self, new: str, like: str) -> None:
        """A copy of ``like``'s whole network becomes ``new``'s (its modality-specific
        normalisation sets, if any, renamed to ``new``, as a rebuilt network names them)."""
        net = copy.deepcopy(self.net.nets[like])
        for layer in modality_norms(net):
            layer.norms[new] = layer.norms.pop(like)
        self.net.nets[new] = net
