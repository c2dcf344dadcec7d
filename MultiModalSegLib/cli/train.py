"""``mmseg train --config FILE``: train a model; rerunning the same command resumes it.

The plan and progress bars (writing phantoms, reading cases, training steps) go to stderr; the
result, the last validation Dice per modality and organ as a table, to stdout. ``--progress``
makes stdout JSON lines only (``plan``, ``progress``, ``result`` events).
"""

from __future__ import annotations

import argparse
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
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: the config's; 0: torch's own choice); "
                   "a run resumes under another count")  # fmt: skip
    p.add_argument("--workers", type=int, help="processes that make the next steps' batches while a step trains (default: the "
                   "config's, usually 0); the same batches either way, so a run resumes under another count")  # fmt: skip
    p.add_argument("--restart", action="store_true", help="discard the run folder's checkpoint and start again")
    p.add_argument("--bundle", help="also copy the finished bundle here, .zip for a zip file (default: only the run folder's bundle); "
                   "an existing one is refused")  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace an existing bundle at --bundle")
    p.add_argument("--quiet", action="store_true", help="no plan and no progress bars")
    p.add_argument("--progress", action="store_true", help="JSON lines only on stdout (plan, progress, result); text on stderr")
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


def result_text(result, out: Path, validation: dict | None) -> str:
    """The end of a run for a person: where it is, its last losses and its validation table."""
    from ..training.validation import validation_markdown

    losses = ", ".join(f"{k} {v:.4f}" for k, v in result.last_losses.items())
    lines = [f"{result.status} at step {result.step}; run folder {out}" + (f"; last losses: {losses}" if losses else "")]
    if validation:
        lines += ["", "Validation Dice at the last step (the run's validation cases, model space):", "",
                  validation_markdown(validation), ""]  # fmt: skip
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ..bundle import load_bundle, save_bundle
    from ..reporting import Reporter
    from ..training import Trainer, distributed, load_config

    reporter = Reporter(json_lines=args.progress, quiet=args.quiet)
    overrides = {k: v for k, v in (("steps", args.steps), ("device", args.device), ("threads", args.threads), ("workers", args.workers))
                 if v is not None}
    cfg = load_config(args.config, overrides)
    out = Path(args.out) if args.out else Path("training") / "runs" / cfg.name
    copied = check_bundle_target(Path(args.bundle), out / "bundle", args.overwrite, args.restart) if args.bundle else False
    result = Trainer(cfg, out, restart=args.restart, quiet=args.quiet, reporter=reporter).run()
    main = distributed.is_main()  # under torchrun rank 0 alone reports and copies the bundle
    distributed.teardown()
    if not main:
        return 0 if result.status == "done" else 3
    validation = result.validation
    if validation is None and result.status == "done":  # a finished run rerun: its bundle's last validation
        validation = load_bundle(result.bundle).metadata.get("metrics", {}).get("validation_dice")
    fields = {"status": result.status, "step": result.step, "run": str(out), "losses": result.last_losses,
              "validation": validation, "bundle": str(result.bundle) if result.bundle else None}  # fmt: skip
    if result.status != "done":
        reporter.result(result_text(result, out, validation) + f"\nstopped at step {result.step}; run the same command again to "
                        f"resume from {out}/checkpoints/last.pt", **fields)  # fmt: skip
        return 3
    text = result_text(result, out, validation) + f"\nbundle: {result.bundle} (model {load_bundle(result.bundle).name})"
    last_step = Path(result.bundle).parent / "bundle_last_step"
    if last_step.is_dir():
        text += f" holding the mean of the recipe's weight_average; the last step's weights: {last_step}"
    if copied:
        text += f"\ncopied to: {args.bundle} (already there)"
    elif args.bundle:
        b = load_bundle(result.bundle)
        extra = {p.name: p for p in Path(result.bundle).iterdir() if p.name not in ("metadata.json", "model.pt")}
        fields["copied_to"] = str(save_bundle(args.bundle, b.metadata, b.state_dict, extra_files=extra, overwrite=args.overwrite))
        text += f"\ncopied to: {fields['copied_to']}"
    reporter.result(text, **fields)
    return 0
