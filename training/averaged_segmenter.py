"""Several bundles segmenting as one, for the external checks: ``--bundle A+B`` in
``external_liver_ct.py`` and ``external_kidney_mr.py`` scores the argmax of the members' mean class
probabilities on the scan's grid, one piece of each organ kept as the ``Segmenter`` keeps it (the voxels of a
dropped piece become background: the mean is not relabelled by its next class), the rule by which
``probability_ensembles.py`` scores its groups on the project's real scans. Each member segments with
its own declared inference (profile, polarity, window); the members must share their labels.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

SEPARATOR = "+"


def members(spec: str | Path) -> list[Path]:
    """The bundle paths of ``spec``: one path, or paths joined by ``+`` (a path that exists as
    given is one bundle, ``+`` in its name or not)."""
    text = str(spec)
    if Path(text).exists() or SEPARATOR not in text:
        return [Path(text)]
    return [Path(part) for part in text.split(SEPARATOR)]


def mean_labels(probabilities: list[np.ndarray], label_info: list, grid) -> tuple[np.ndarray, np.ndarray, dict]:
    """The labels of the mean of ``probabilities`` (class first, on the grid of the Volume ``grid``): its argmax
    with one piece of each organ of ``label_info`` kept, as the ``Segmenter`` keeps it (the largest, unless
    the organ layout finds it out of place); the mean; and the organs' pieces (``segmenter.Pieces`` by value)."""
    from MultiModalSegLib.inference.organ_layout import layout_for
    from MultiModalSegLib.inference.segmenter import organ_pieces

    mean = sum(p.astype(np.float32) for p in probabilities) / len(probabilities)
    labels, pieces = organ_pieces(np.argmax(mean, axis=0).astype(np.uint8), list(label_info), grid, layout_for(list(label_info)))
    return labels, mean, pieces


class AveragedSegmenter:
    """``segment(volume, modality)`` as a ``Segmenter`` does, from the mean of the members'
    probabilities; ``bundle`` is the first member's (its labels are every member's). A dropped piece's voxels
    become background (:attr:`dropped_pieces`), whatever ``dropped_pieces`` the members are given."""

    dropped_pieces = "background"

    def __init__(self, bundles: list[Path], **options) -> None:
        from MultiModalSegLib.errors import InputError
        from MultiModalSegLib.inference import Segmenter

        self.members = [Segmenter(b, **options) for b in bundles]
        self.bundle = self.members[0].bundle
        first = self.bundle.metadata["labels"]
        for path, member in zip(bundles, self.members, strict=True):
            if member.bundle.metadata["labels"] != first:
                raise InputError(f"{path}: its labels differ from {bundles[0]}'s; average models of one label set.")
        self.label_info = self.members[0].label_info

    def segment(self, volume, modality: str = "auto"):
        from MultiModalSegLib.io import Volume

        results = [m.segment(volume, modality, probabilities=True) for m in self.members]
        from MultiModalSegLib.inference.segmenter import rivals

        grid = results[0].labels
        labels, mean, pieces = mean_labels([r.probabilities for r in results], self.label_info, grid)
        moved = tuple(lab.name for lab in self.label_info if lab.value in pieces and pieces[lab.value].out_of_place)
        return dataclasses.replace(results[0], labels=Volume(labels, grid.spacing, grid.origin, grid.direction),
                                   probabilities=mean, seconds=sum(r.seconds for r in results),
                                   rival_pieces=rivals(pieces, self.label_info, grid.spacing), out_of_place=moved)


def segmenter(spec: str | Path, **options):
    """A ``Segmenter`` for one bundle, an :class:`AveragedSegmenter` for ``A+B``; ``options`` go to each."""
    from MultiModalSegLib.inference import Segmenter

    paths = members(spec)
    return Segmenter(paths[0], **options) if len(paths) == 1 else AveragedSegmenter(paths, **options)


def described(seg) -> str:
    """``name version`` of a segmenter's model, members joined by `` + ``."""
    return " + ".join(f"{m.bundle.metadata['name']} {m.bundle.metadata['version']}" for m in getattr(seg, "members", [seg]))
