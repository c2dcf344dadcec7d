"""The tiny CT + MR model that the third-modality fine-tuning test starts from.

A UMMKD model (shared kernels, one BatchNorm set per modality) on a three-level U-Net with
8-16-32 channels at 6 mm voxels and 16 x 32 x 32 patches, trained on synthetic phantoms (5 CT
and 5 MR, the last of each validating) without augmentation. It is small enough for a test to
fine-tune it on a CPU in seconds and trained long enough to segment phantoms (its validation Dice
is in the bundle's metrics), so that "the old modalities keep their Dice" means something. The
bundle folder is written to ``Testing/library/training/data/tiny-ctmr-ummkd/``::

    python training/tiny_ctmr_parent.py                 # the committed fixture, minutes on 2 cores
    python training/tiny_ctmr_parent.py --quick --out /tmp/parent  # 2 steps on 1 + 1 phantoms

The run folder (default ``training/runs/tiny-ctmr-parent``) is an ordinary training run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from MultiModalSegLib.bundle import load_bundle, save_bundle  # noqa: E402
from MultiModalSegLib.training import Trainer  # noqa: E402
from MultiModalSegLib.training.config import config_from_dict  # noqa: E402

FIXTURE = REPO / "Testing" / "library" / "training" / "data" / "tiny-ctmr-ummkd"
NAME = "tiny-ctmr-ummkd"


def config(steps: int, phantoms: int, validation: int) -> dict:
    """The training configuration (phantoms generated into the run folder)."""
    return {
        "name": NAME,
        "method": "ummkd",
        "network": {"name": "unet3d", "params": {"features": [8, 16, 32]}},
        "phantoms": {"ct": phantoms, "mr": phantoms, "validation": validation, "seed": 0},
        "spacing": [6.0, 6.0, 6.0],
        "patch_size": [16, 32, 32],
        "batch_size": 2,
        "augment": False,
        "lr": 0.01,
        "schedule": {"name": "cosine", "warmup_steps": 10},
        "steps": steps,
        "validate_every": max(steps // 5, 1),
        "checkpoint_every": 50,
        "log_every": 10,
        "threads": 1,
        "bundle": {
            "name": NAME,
            "version": "0.1.0",
            "description": "Tiny CT + MR UMMKD model on phantoms: the parent of the third-modality fine-tuning test.",
            "licence": "CC0-1.0",
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=FIXTURE, help=f"bundle folder to write (default {FIXTURE})")
    parser.add_argument("--run", type=Path, default=REPO / "training" / "runs" / "tiny-ctmr-parent", help="run folder")
    parser.add_argument("--steps", type=int, default=250, help="optimiser steps (default 250)")
    parser.add_argument("--quick", action="store_true", help="2 steps on one CT and one MR phantom (checks the script runs)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    steps, phantoms, validation = (2, 1, 0) if args.quick else (args.steps, 5, 1)
    result = Trainer(config_from_dict(config(steps, phantoms, validation)), args.run, quiet=args.quiet).run()
    if result.status != "done":
        print(f"stopped at step {result.step}; run the same command again to resume")
        return 3
    bundle = load_bundle(result.bundle)
    save_bundle(args.out, bundle.metadata, bundle.state_dict, overwrite=True)
    print(f"bundle: {args.out}; validation Dice: {result.validation}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
