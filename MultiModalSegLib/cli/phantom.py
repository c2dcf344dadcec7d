"""``mmseg phantom``: write a synthetic unpaired CT + MR (+ optional cone-beam CT) abdominal dataset."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..atomic import check_output_folder
from ..errors import OutputError
from .options import OUTPUT_FLAGS


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a non-negative integer")
    return value


def check_new_folder(out: Path) -> None:
    """Refuse, before anything is written, a folder that already holds files (a user's data set)."""
    check_output_folder(out, "--output")
    if out.is_dir() and any(out.iterdir()):
        held = ", ".join(sorted(p.name for p in out.iterdir())[:4])
        raise OutputError(
            f"--output {out}: folder is not empty (holds {held}); give a new or empty folder, nothing was written."
        )


def register(subparsers) -> None:
    """Add the ``phantom`` sub-command."""
    parser = subparsers.add_parser(
        "phantom",
        help="write synthetic abdominal CT and MR phantoms with liver, spleen and kidney labels",
        description="Write seeded synthetic unpaired abdominal CT and MR scans with label maps "
        "(imagesTr/, labelsTr/) and a dataset.json describing them.",
    )
    parser.add_argument(*OUTPUT_FLAGS, dest="out", metavar="FOLDER", required=True,
                        help="output folder: a new or empty one, created if missing (--out is an alias)")  # fmt: skip
    parser.add_argument("--ct", type=_count, default=2, metavar="N", help="number of CT cases (default 2)")
    parser.add_argument("--mr", type=_count, default=2, metavar="M", help="number of MR cases (default 2)")
    parser.add_argument(
        "--cbct", type=_count, default=0, metavar="K",
        help="number of cone-beam CT cases, a third modality (default 0)",
    )  # fmt: skip
    parser.add_argument("--seed", type=_count, default=0, metavar="S", help="dataset seed (default 0)")
    parser.add_argument(
        "--validation", type=_count, default=0, metavar="K",
        help="put the last K cases of each modality in the validation split (default 0)",
    )  # fmt: skip
    parser.add_argument("--thorax", action="store_true",
                        help="add lung bases, diaphragm, heart and lower ribs above the abdomen (chest-abdomen scans)")  # fmt: skip
    parser.add_argument("--anatomy", type=int, choices=(1, 2), default=1,
                        help="organ shapes: 1, the first anatomy (default), or 2, wider (spleen size and crescent, "
                        "liver left lobe, kidney size)")  # fmt: skip
    parser.add_argument("--progress", action="store_true", help="JSON lines only on stdout (plan, progress, result); text on stderr")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write the dataset (a bar per case on stderr) and print where its ``dataset.json`` is and how to train on it."""
    from ..data.phantoms import write_phantom_dataset
    from ..reporting import Reporter

    check_new_folder(Path(args.out))
    reporter = Reporter(json_lines=args.progress)
    extra = {"CBCT": args.cbct} if args.cbct else None
    total = args.ct + args.mr + args.cbct
    reporter.plan(f"writing {total} phantoms ({args.ct} CT, {args.mr} MR" + (f", {args.cbct} CBCT" if args.cbct else "")
                  + f"; the last {args.validation} of each for validation) to {args.out}", total=total, out=str(args.out))  # fmt: skip
    bar = reporter.bar(total, "phantoms")
    path = write_phantom_dataset(args.out, args.ct, args.mr, seed=args.seed, n_validation=args.validation, extra=extra,
                                 progress=lambda done, _total: bar.update(done), thorax=args.thorax, anatomy=args.anatomy)  # fmt: skip
    bar.close()
    reporter.result(f"phantom dataset: {path}\ntrain on it: list {Path(path).resolve()} in the \"datasets\" of a training "
                    "config and run mmseg train --config CONFIG (training/configs/phantoms_data_ummkd.json lists "
                    "data/phantoms/dataset.json of the repository folder)", dataset=str(path))  # fmt: skip
    return 0
