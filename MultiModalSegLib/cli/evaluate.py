"""``mmseg evaluate``: Dice, HD95 and ASSD of predicted label maps against references."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import InputError
from ..labels import ABDOMEN_LABELS, LABEL_REMAPS, LabelInfo, labels_by_name
from .options import OUTPUT_FLAGS


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``evaluate`` sub-command."""
    parser = subparsers.add_parser(
        "evaluate",
        help="score predicted label maps against references (Dice, HD95, ASSD)",
        description="Score predicted label maps against reference label maps on the same grid. "
        "Folders pair files by case name (file name without .seg.nrrd/.nii.gz/.nii/.nrrd).",
    )
    parser.add_argument("--pred", required=True, type=Path, help="predicted label map file or folder")
    parser.add_argument("--ref", required=True, type=Path, help="reference label map file or folder")
    parser.add_argument(
        *OUTPUT_FLAGS, dest="out", metavar="FOLDER", type=Path, default=None,
        help="folder for metrics.csv/json/md (default: the prediction folder; for a single file nothing is written "
        "unless given; --out is an alias)",
    )  # fmt: skip
    parser.add_argument(
        "--labels", default=None,
        help="comma-separated label names to score (default: " + ",".join(lab.name for lab in ABDOMEN_LABELS) + ")",
    )
    parser.add_argument(
        "--ref-remap", default=None, choices=sorted(LABEL_REMAPS),
        help="map the reference's label ids to the model's, e.g. totalsegmentator (default: none, the ids are the model's)",
    )
    parser.set_defaults(func=run)
    return parser


def parse_labels(text: str | None) -> list[LabelInfo]:
    """Label names (comma-separated) -> LabelInfo of the abdominal task; None -> all of them."""
    if not text:
        return list(ABDOMEN_LABELS)
    known = labels_by_name(ABDOMEN_LABELS)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise InputError(f"--labels: unknown label(s) {unknown or text!r}; choose from {', '.join(known)}.")
    return [known[n] for n in names]


def _remap(name: str | None) -> dict[int, int] | None:
    if name is None:
        return None
    if name not in LABEL_REMAPS:
        raise InputError(f"--ref-remap: unknown remapping '{name}'; choose from {', '.join(sorted(LABEL_REMAPS))}.")
    return LABEL_REMAPS[name]


def _evaluate(args: argparse.Namespace, labels: list[LabelInfo], remap: dict[int, int] | None) -> tuple[dict, Path | None]:
    """The metrics per case, and the folder they were written to (None: not written)."""
    pred, ref = Path(args.pred), Path(args.ref)
    for path, flag in ((pred, "--pred"), (ref, "--ref")):
        if not path.exists():
            raise InputError(f"{flag} {path}: no such file or folder; check the path.")
    from .. import metrics  # MONAI's metrics: imported once the inputs exist
    if pred.is_dir() and ref.is_dir():
        out = args.out or pred
        return metrics.evaluate_folders(pred, ref, out, labels, remap), Path(out)
    if pred.is_file() and ref.is_file():
        results = {metrics.case_name(pred) or pred.name: metrics.evaluate_files(pred, ref, labels, remap)}
        if args.out is not None:
            metrics.write_results(results, args.out)
        return results, args.out
    raise InputError(f"--pred {pred} and --ref {ref} must both be files or both be folders; give matching kinds.")


def run(args: argparse.Namespace) -> int:
    """Evaluate, write the metrics files, print the markdown table (stdout) and where it went (stderr)."""
    from ..metrics import format_markdown_table

    labels = parse_labels(args.labels)
    results, written = _evaluate(args, labels, _remap(args.ref_remap))
    print(format_markdown_table(results), end="")
    if written is None:
        print("metrics not written (one pair of files: give --output FOLDER to write them)", file=sys.stderr)
    else:
        print(f"metrics written to {written}: metrics.csv, metrics.json, metrics.md", file=sys.stderr)
    return 0
