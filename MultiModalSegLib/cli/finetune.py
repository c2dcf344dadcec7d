"""``mmseg finetune``: train a model further on new labelled cases and write a new versioned bundle.

```
mmseg finetune --init BUNDLE_OR_MODEL_NAME --data DATASET [--data ...] --output NEW_BUNDLE
               [--method M] [--few-shot MODALITY=N ...] [--phantoms N] [--heldout-phantoms K]
               [--parent-data auto|no|DATASET ...] [--parent-data-root DIR ...] [--like NEW=EXISTING]
               [--steps N] [--lr X] [--keep-worse] [--device D] [--norm-stats frozen|train]
               [--run-dir RUN_DIR] [--restart] [--overwrite] [--quiet] [--progress]
```

The run folder (``--run-dir`` or ``--run``, default ``training/runs/finetune-<out name>``) is an ordinary training
run: another process can follow ``RUN_DIR/progress.jsonl`` (JSON lines: ``finetune``, ``evaluation``
before, ``start``, ``step``, ``checkpoint``, ``stopped`` or ``done``, ``evaluation`` after, and
``finetuned`` last, with the new bundle's path); a file named ``STOP`` in it (or SIGTERM) stops the
run after the current step with a checkpoint and exit code 3, and rerunning the same command
resumes. The before/after Dice table is printed and written beside the bundle
(``<name>.finetune.md`` / ``.json``); a model worse than its parent on the held-out cases is not
saved without ``--keep-worse`` (exit 1). The plan and progress bars go to stderr; ``--progress``
makes stdout JSON lines only. See :mod:`MultiModalSegLib.training.finetune`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import DEVICE_HELP, OUTPUT_FLAGS


def _pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise argparse.ArgumentTypeError(f"{text!r}: give NAME=VALUE, e.g. MR=1")
    return name, value


def _few_shot(text: str) -> tuple[str, int]:
    name, value = _pair(text)
    try:
        return name, int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: the count after '=' must be an integer, e.g. MR=1") from None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "finetune",
        help="fine-tune a model on new labelled cases (few-shot too) and write a new versioned bundle",
        description="Fine-tune a model bundle on new labelled cases; rerunning the same command resumes an interrupted run.",
    )
    p.add_argument("--init", required=True, help="the parent model: a bundle path or a model name from the manifest")
    p.add_argument("--data", required=True, action="append", help="dataset.json (or its folder) with the new cases; repeatable")
    p.add_argument(*OUTPUT_FLAGS, dest="out", metavar="BUNDLE", required=True,
                   help="the new bundle, a folder or a .zip file (--out is an alias)")  # fmt: skip
    p.add_argument("--method", help="training method (default: the parent's; another one only if the parent's weights load into it)")
    p.add_argument("--few-shot", action="append", type=_few_shot, default=[], metavar="MODALITY=N",
                   help="keep the labels of only N training cases of MODALITY from the data (its replay cases lose theirs); repeatable (default: every label kept)")  # fmt: skip
    p.add_argument("--phantoms", type=int, metavar="N", help="training phantoms per modality mixed in (default 4, or 0 "
                   "when the parent's own training data is replayed)")  # fmt: skip
    p.add_argument("--heldout-phantoms", type=int, default=2, metavar="K", help="held-out phantoms per modality scored before/after (default 2)")
    p.add_argument("--parent-data", action="append", metavar="auto|no|DATASET",
                   help="auto (default): replay the parent's training data sets, found by the sha256 its bundle records "
                        "under --parent-data-root folders, Resources/SampleData, training/datasets and ../shared/data "
                        "(an error says which is missing); no: replay none (phantoms instead); DATASET: a dataset.json "
                        "(or its folder) to replay, repeatable")  # fmt: skip
    p.add_argument("--parent-data-root", action="append", default=[], metavar="DIR",
                   help="another folder where --parent-data auto looks for the parent's data sets (a few levels deep); repeatable (default: none)")  # fmt: skip
    p.add_argument("--like", action="append", type=_pair, default=[], metavar="NEW=EXISTING",
                   help="a modality the parent lacks starts from this one's parameters (methods with add_modality); repeatable (default: none)")  # fmt: skip
    p.add_argument("--norm-stats", choices=("frozen", "train"), default="frozen",
                   help="frozen: keep the parent's BatchNorm statistics (default; right for a few volumes); train: update them")  # fmt: skip
    p.add_argument("--steps", type=int, default=200, help="optimiser steps (default 200)")
    p.add_argument("--lr", type=float, default=DEFAULT_LR,
                   help=f"peak learning rate, cosine schedule (default {DEFAULT_LR:g}, the rate of the few-shot evidence in "
                        "training/reports/finetune-fewshot; 5e-4 lost Dice on both modalities there)")  # fmt: skip
    p.add_argument("--keep-worse", action="store_true",
                   help="save the new model even when its held-out Dice is worse than its parent's (by default it is "
                        "not saved and the command exits 1)")  # fmt: skip
    p.add_argument("--validate-every", type=int, default=0, metavar="N",
                   help="also score the held-out cases every N steps (validation events in progress.jsonl; default 0: before and after only)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="seed of sampling, few-shot choice and phantoms (default 0)")
    p.add_argument("--device", default="auto", help=f"{DEVICE_HELP} (default: auto)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads, 0 for PyTorch's choice (default 0)")
    p.add_argument("--name", help="name of the new model (default: <parent name>-finetuned-<date>-<time>; never the "
                   "name of a model in the models manifest)")
    p.add_argument(
        "--run-dir", "--run", dest="run",
        help="run folder (default training/runs/finetune-<out name>); under torchrun write --run-dir, which torchrun does not mistake for its --run-path",
    )
    p.add_argument("--restart", action="store_true", help="discard the run folder's checkpoint and start again")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bundle at --output (never the parent)")
    p.add_argument("--quiet", action="store_true", help="no plan and no progress bars")
    p.add_argument("--progress", action="store_true", help="JSON lines only on stdout (plan, progress, result); text on stderr")
    p.set_defaults(func=run)


DEFAULT_LR = 5e-5  # MultiModalSegLib.training.finetune.DEFAULT_LR, here so that --help imports nothing heavy


def run(args: argparse.Namespace) -> int:
    from ..reporting import Reporter
    from ..training import distributed
    from ..training.finetune import FinetuneOptions, finetune

    reporter = Reporter(json_lines=args.progress, quiet=args.quiet)
    opts = FinetuneOptions(
        init=args.init,
        data=list(args.data),
        out=Path(args.out),
        method=args.method,
        few_shot=dict(args.few_shot),
        phantoms=args.phantoms,
        heldout_phantoms=args.heldout_phantoms,
        parent_data=args.parent_data or "auto",
        parent_data_roots=list(args.parent_data_root),
        like=dict(args.like),
        steps=args.steps,
        lr=args.lr,
        seed=args.seed,
        device=args.device,
        threads=args.threads,
        name=args.name,
        run_dir=Path(args.run) if args.run else None,
        restart=args.restart,
        overwrite=args.overwrite,
        quiet=args.quiet,
        norm_stats=args.norm_stats,
        validate_every=args.validate_every,
        keep_worse=args.keep_worse,
        reporter=reporter,
    )
    result = finetune(opts)
    if not distributed.is_main():  # under torchrun rank 0 alone reports
        return 0 if result.status == "done" else 3
    fields = {"status": result.status, "step": result.step, "run": str(result.run_dir),
              "bundle": str(result.bundle) if result.bundle else None, "worse": result.worse}  # fmt: skip
    if result.status == "stopped":
        reporter.result(f"stopped at step {result.step}; run the same command again to resume from "
                        f"{result.run_dir}/checkpoints/last.pt", **fields)  # fmt: skip
        return 3
    table = result.table_md.read_text()
    if result.status == "worse":
        reporter.result(table, **fields, table=str(result.table_md))
        reporter.note(
            "mmseg finetune: WARNING: the new model is WORSE than its parent on the held-out cases (mean Dice "
            + "; ".join(result.worse) + f"); it was NOT saved to {args.out}. Rerun the same command with --keep-worse "
            "to save it anyway (the finished run is reused), or try fewer --steps or a lower --lr.",
            worse=result.worse,
        )
        return 1
    reporter.result(f"{table}\nbundle: {result.bundle}\ntable: {result.table_md} and {result.table_json}", **fields,
                    table=str(result.table_md))  # fmt: skip
    if result.worse:
        reporter.note("mmseg finetune: WARNING: the new model is WORSE than its parent on the held-out cases (mean Dice "
                      + "; ".join(result.worse) + "); saved because of --keep-worse.", worse=result.worse)  # fmt: skip
    return 0
