"""The command line's one vocabulary: the spellings every command shares.

The file or folder a command writes is ``--output`` / ``-o``; ``--out``, the older spelling of some
commands, stays an alias so that existing scripts keep working. ``--device`` takes the same names
everywhere (:data:`..device.DEVICE_HELP`), and ``--progress`` means JSON lines only on stdout.
"""

from __future__ import annotations

from ..device import DEVICE_HELP

OUTPUT_FLAGS = ("--output", "-o", "--out")

__all__ = ["DEVICE_HELP", "OUTPUT_FLAGS"]
