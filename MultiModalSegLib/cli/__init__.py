"""The ``mmseg`` command. Each sub-command is a module here with ``register(subparsers)``."""

from __future__ import annotations

import argparse
import importlib
import sys

from .. import __version__, monai_start
from ..errors import MMSegError

COMMANDS = ("demo", "segment", "train", "finetune", "evaluate", "phantom", "detect", "models")


def build_parser() -> argparse.ArgumentParser:
    """The ``mmseg`` parser; building it imports no heavy package (the commands import theirs when run)."""
    parser = argparse.ArgumentParser(
        prog="mmseg",
        description="Segment CT and MR with one joint model; train, evaluate and package models. "
        "Every command that writes takes --output/-o (--out is an alias); `mmseg COMMAND --help` describes each.",
    )
    parser.add_argument("--version", action="version", version=f"mmseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def _quiet_itk() -> None:
    """ITK's console warnings (e.g. about DICOM slice spacing) are replaced by the library's own checks."""
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalWarningDisplay(False)


def main(argv: list[str] | None = None) -> int:
    monai_start.install()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        check = getattr(args, "check", None)
        if check is not None:  # what can be refused before the heavy imports (see e.g. segment.check)
            check(args)
        _quiet_itk()
        return int(args.func(args) or 0)
    except MMSegError as exc:
        print(f"mmseg {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a file the command could not read or write, not foreseen above: one sentence still
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"mmseg {args.command}: error: {where}{exc.strerror or exc}; check the path and the disk.", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"mmseg {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
