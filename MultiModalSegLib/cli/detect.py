"""``mmseg detect IMAGE...``: print each image's modality and why."""

from __future__ import annotations

import argparse
import sys

from ..errors import InputError


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "detect",
        help="guess the modality (CT or MR) of images",
        description="Print 'path: MODALITY (reason)' for each image: from its DICOM tag or its intensities.",
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image file or DICOM folder")
    parser.add_argument("--series", metavar="UID", help="the SeriesInstanceUID to read in DICOM folders holding several (default: a folder's only series)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Detect each image's modality; an unreadable image is reported and the others still run."""
    from ..io import read_image
    from ..modalities import detect_modality_reason

    failed = 0
    for path in args.images:
        try:
            modality, reason = detect_modality_reason(read_image(path, args.series))
        except InputError as exc:
            print(f"mmseg detect: error: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(f"{path}: {modality} ({reason})")
    return 1 if failed else 0
