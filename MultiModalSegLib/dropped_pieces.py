"""What the voxels of an organ's dropped piece become, a choice of the ``Segmenter`` and of ``mmseg segment``.

Each organ keeps one connected piece (the largest, unless it lies out of place). ``next_class``, the default,
gives the voxels of every piece it drops their next most probable class, so a piece of the spleen that the
network called left kidney returns to the spleen and a false piece far from every organ becomes background
(:func:`~MultiModalSegLib.inference.segmenter.suppress_dropped_pieces`); ``background`` was the rule before
(every shipped model under both: ``training/reports/dropped-pieces/``). Kept apart from the ``Segmenter`` so
that the command line and the model card name the choices without importing torch.
"""

from __future__ import annotations

DROPPED_PIECES = ("next_class", "background")
DEFAULT_DROPPED_PIECES = DROPPED_PIECES[0]
# how a bundle's ``real_scans_source`` names the choice its real-scan metrics were scored under; a source
# without it was scored under ``background`` (bundles packaged before the choice existed)
SOURCE_PREFIX = "a dropped piece's voxels: "


def scored_choice(source: str) -> str:
    """The choice a bundle's real-scan metrics were scored under, read from their ``source`` text."""
    for choice in DROPPED_PIECES:
        if SOURCE_PREFIX + choice in source:
            return choice
    return "background"
