"""``mmseg train --config FILE``: train a model; rerunning the same command resumes it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .options import DEVICE_HELP, OUTPUT_FLAGS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train a model from a JSON config (resumes an interrupted run)",
        description="Train a model from a JSON config into a run folder (checkpoints, progress.jsonl, the finished "
        "bundle); rerunning the same command resumes an interrupted run from its last checkpoint.",
    )  # fmt: skip
    p.add_argument("--config", required=True, help="training config (see training/configs/)")
    p.add_argument(*OUTPUT_FLAGS, dest="out", metavar="FOLDER",
                   help="run folder (default: training/runs/<config name>; --out is an alias)")  # fmt: skip
    p.add_argument("--steps", type=int, help="number of optimiser steps (default: the config's)")
    p.add_argument("--device", help=f"{DEVICE_HELP} (default: the config's)")
    p.add_argument("--restart", action="store_true", help="discard the run folder's checkpoint and start again")
    p.add_argument("--bundle", help="also copy the finished bundle here, .zip for a zip file (default: only the run folder's bundle); "
                   "an existing one is refused")  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace an existing bundle at --bundle")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _same_weights(a: Path, b: Path) -> bool:
    from ..errors import BundleError
    from ..models import read_bundle_metadata

    try:
        return read_bundle_metadata(a).get("model_sha256") == read_bundle_metadata(b).get("model_sha256")
    except BundleError:
        return False


def check_bundle_target(target: Path, run_bundle: Path, overwrite: bool, restart: bool = False) -> bool:
    """Before training: refuse an existing ``--bundle`` unless ``overwrite`` (or it is already this run's
    finished bundle: then True, nothing to copy)."""
    from ..atomic import check_output_folder
    from ..errors import BundleError

    check_output_folder(target.parent, "--bundle")
    if not (target.exists() or target.is_symlink()) or overwrite:
        return False
    if run_bundle.is_dir() and not restart and _same_weights(target, run_bundle):
        return True
    raise BundleError(
        f"--bundle {target} already exists; choose another path or pass --overwrite to replace it (nothing was trained)."
    )


def run(args: argparse.Namespace) -> int:
    from ..bundle import load_bundle, save_bundle
    from ..training import Trainer, distributed, load_config

    overrides = {k: v for k, v in (("steps", args.steps), ("device", args.device)) if v is not None}
    cfg = load_config(args.config, overrides)
    out = Path(args.out) if args.out else Path("training") / "runs" / cfg.name
    copied = check_bundle_target(Path(args.bundle), out / "bundle", args.overwrite, args.restart) if args.bundle else False
    result = Trainer(cfg, out, restart=args.restart, quiet=args.quiet).run()
    main = distributed.is_main()  # under torchrun rank 0 alone reports and copies the bundle
    distributed.teardown()
    if not main:
        return 0 if result.status == "done" else 3
    print(json.dumps({"status": result.status, "step": result.step, "run": str(out), "losses": result.last_losses}))
    if result.status != "done":
        print(f"stopped at step {result.step}; run the same command again to resume from {out}/checkpoints/last.pt")
        return 3
    print(f"bundle: {result.bundle}")
    if copied:
        print(f"copied to: {args.bundle} (already there)")
    elif args.bundle:
        b = load_bundle(result.bundle)
        extra = {p.name: p for p in Path(result.bundle).iterdir() if p.name not in ("metadata.json", "model.pt")}
        print(f"copied to: {save_bundle(args.bundle, b.metadata, b.state_dict, extra_files=extra, overwrite=args.overwrite)}")
    return 0
