"""Combine trained bundles of one architecture into one ensemble bundle (their class probabilities averaged).

    python training/ensemble_bundle.py --member Resources/Models/abdomen-ummkd-synth-3.1.0.zip \
        --member training/runs-in-progress/abdomen-ummkd-synth-30/bundle \
        --name abdomen-ummkd-synth --version 3.2.0 --description "..." --out /tmp/abdomen-ummkd-synth-3.2.0

Each member is loaded sha256-verified; the members must share method, network, labels, voxel size, patch
size, intensity profiles and inference settings (:func:`MultiModalSegLib.bundle_members.check_compatible`).
The result is an ordinary bundle (:mod:`MultiModalSegLib.bundle_members`) that every command segments,
evaluates and fine-tunes; ``training/package_model.py --bundle`` releases it with measured figures.
``mmseg models combine`` does the same from the installed package, members given by manifest name or path.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from MultiModalSegLib.bundle import load_bundle  # noqa: E402
from MultiModalSegLib.bundle_members import member_names, write_ensemble  # noqa: E402
from MultiModalSegLib.errors import BundleError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--member", action="append", required=True, type=Path, help="a member bundle (repeat; two or more)")
    p.add_argument("--name", required=True)
    p.add_argument("--version", required=True)
    p.add_argument("--description", required=True)
    p.add_argument("--out", required=True, type=Path, help="the ensemble bundle (a folder, or a .zip)")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    try:
        bundles = [load_bundle(path) for path in args.member]
        out = write_ensemble(bundles, args.out, name=args.name, version=args.version, description=args.description,
                             overwrite=args.overwrite)
    except BundleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{out}: {args.name} {args.version}, the mean of {member_names(bundles)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
