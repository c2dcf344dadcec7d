"""Several independently trained networks of one architecture behind one ``forward(image, modality)``.

A bundle whose metadata lists ``members`` (:mod:`MultiModalSegLib.bundle_members`) holds the weights of
each member under ``members.<i>.``; its inference network is this module. The output is the log of the
members' mean class probabilities, so the Segmenter's softmax gives that mean and its argmax the
ensemble's labels (the rule of nnU-Net's fold ensembles, Isensee et al. 2021: probabilities, not logits,
are averaged). Every window runs through every member, so an ensemble of K members costs K times one
model's network time; everything around the network (normalisation ensembles, polarity, windows) is
unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn


class MemberEnsemble(nn.Module):
    """``members`` (same input, same classes) averaged in probability; returns log mean probabilities."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least two members, got {len(members)}")
        self.members = nn.ModuleList(members)

    @property
    def divisor(self) -> int:
        return max(getattr(m, "divisor", 1) for m in self.members)

    def forward(self, x: torch.Tensor, modality: str | None = None) -> torch.Tensor:
        # out of place: in training (Method.train_as_ensemble) autograd needs every member's probabilities
        mean = sum(torch.softmax(member(x, modality).float(), 1) for member in self.members) / len(self.members)
        return torch.log(mean.clamp_min(torch.finfo(mean.dtype).tiny))


def member_count(metadata: Mapping) -> int:
    """How many networks a bundle's metadata describes: the length of its ``members`` list, else 1."""
    return len(metadata.get("members") or []) or 1


def with_members(metadata: Mapping, build_one: Callable[[], nn.Module]) -> nn.Module:
    """``build_one()`` for a single-network bundle; a :class:`MemberEnsemble` of ``member_count`` such
    networks for a bundle that lists ``members``."""
    count = member_count(metadata)
    return build_one() if count == 1 else MemberEnsemble([build_one() for _ in range(count)])
