"""The ``--dropped-pieces`` choice in the scripts that score models, and its mark in their result rows.

Each row records the choice it was scored under (``dropped_pieces``); a row written before the choice existed
has none and was scored under ``background``. A table names the choice beside the model where it is not the
``Segmenter``'s default (:data:`MultiModalSegLib.dropped_pieces.DEFAULT_DROPPED_PIECES`).
"""

from __future__ import annotations

import argparse

from MultiModalSegLib.dropped_pieces import DEFAULT_DROPPED_PIECES, DROPPED_PIECES


def add_dropped_pieces_option(parser: argparse.ArgumentParser) -> None:
    """``--dropped-pieces`` (repeatable: side by side): what the voxels of an organ's dropped piece become."""
    parser.add_argument("--dropped-pieces", choices=DROPPED_PIECES, action="append",
                        help="what a dropped piece's voxels become (Segmenter dropped_pieces; repeatable: side by side; "
                             f"default: {DEFAULT_DROPPED_PIECES})")


def dropped_option(choice: str | None) -> dict:
    """The ``Segmenter`` keyword for ``choice``; none for None (its default)."""
    return {} if choice is None else {"dropped_pieces": choice}


def row_choice(row: dict) -> str:
    """The choice a result row was scored under (``background`` for a row older than the choice)."""
    return row.get("dropped_pieces", "background")


def choice_text(row: dict, template: str = ", dropped pieces: {}") -> str:
    """``template`` filled with the row's choice where it is not the default, else ""."""
    return "" if row_choice(row) == DEFAULT_DROPPED_PIECES else template.format(row_choice(row))
