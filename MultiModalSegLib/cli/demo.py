"""``mmseg demo``: segment the shipped real CT and MR samples with the default model, offline."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .options import DEVICE_HELP, OUTPUT_FLAGS

SAMPLES = ("abdomen_ct_01", "abdomen_mr_01")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="segment the shipped CT and MR samples and score them (no network needed)",
        description="Segment the shipped real CT and MR samples with the default model, offline, and score them "
        "against their reference labels: segmentations (.seg.nrrd), overlays (.png), dice.md and metrics.json.",
    )
    p.add_argument(*OUTPUT_FLAGS, dest="output", metavar="FOLDER", default="mmseg-demo",
                   help="output folder (default: ./mmseg-demo; --out is an alias)")  # fmt: skip
    p.add_argument("--model", help="bundle path or manifest name (default: the default model); a bundle path whose "
                   "sha256 is neither the manifest's nor in your trusted list is used with an 'unverified' warning")
    p.add_argument("--device", default="auto", help=f"{DEVICE_HELP} (default: auto)")
    p.add_argument("--progress", action="store_true", help="JSON lines only on stdout (plan, progress, result); text on stderr")
    p.set_defaults(func=run)


def score_sample(segmenter, case: str, modality: str = "auto", progress=None):
    """Segment one shipped sample and score it against its remapped TotalSegmentator labels.

    Returns ``(image, segmentation, reference, metrics)``; used by the demo and by
    ``training/package_model.py``. ``progress(fraction, message)`` follows the segmentation.
    """
    from ..io import read_image, read_labelmap
    from ..labels import LABEL_REMAPS
    from ..metrics import evaluate_labels, remap_labels
    from ..resources import resources_dir

    folder = resources_dir() / "SampleData" / case
    image = read_image(folder / "image.nii.gz")
    seg = segmenter.segment(image, modality, progress=progress)
    ref = read_labelmap(folder / "label_totalseg.nii.gz", reference=image)
    ref.array = remap_labels(ref.array, LABEL_REMAPS["totalsegmentator"])
    return image, seg, ref, evaluate_labels(seg.labels.array, ref.array, seg.label_info, image.spacing)


def run(args: argparse.Namespace) -> int:
    from ..reporting import Reporter

    reporter = Reporter(json_lines=args.progress)
    out = Path(args.output)
    reporter.plan(f"demo: segmenting the shipped samples {', '.join(SAMPLES)} (loading the model first); "
                  f"outputs in {out}", cases=list(SAMPLES), output=str(out))  # fmt: skip

    from ..atomic import write_text_atomic
    from ..inference import Segmenter
    from ..io import write_segmentation
    from ..metrics import format_markdown_table
    from ..visualization import save_overlay

    out.mkdir(parents=True, exist_ok=True)
    segmenter = Segmenter(args.model, device=args.device)
    reporter.say(f"model: {segmenter.bundle.name} {segmenter.bundle.metadata['version']} ({segmenter.bundle.path}) on {segmenter.device}")
    if segmenter.provenance.status == "unverified":
        reporter.note(f"mmseg demo: warning: {segmenter.provenance.message}.")
    results = {}
    for number, case in enumerate(SAMPLES, 1):
        bar = reporter.bar(100, f"case {number}/{len(SAMPLES)} {case}")

        def progress(fraction: float, message: str, bar=bar) -> None:
            bar.update(int(round(100 * fraction)), message, message=message)

        image, seg, ref, results[case] = score_sample(segmenter, case, progress=progress)
        bar.update(100, "done")
        bar.close()
        written = write_segmentation(seg.labels, out / f"{case}.seg.nrrd", seg.label_info, overwrite=True)
        dice = {organ: m.get("dice") for organ, m in results[case].items()}
        png = save_overlay(image, seg.labels, seg.label_info, seg.modality, out / f"{case}.png", reference=ref, dice=dice)
        reporter.say(f"{case}: {seg.modality} ({seg.modality_reason}), {seg.seconds:.1f} s -> {written}, {png}")
    table = format_markdown_table(results)
    write_text_atomic(out / "dice.md",
        "Metrics of the default model against the shipped TotalSegmentator pseudo-labels "
        "(Dice; HD95 and ASSD in mm).\n\n" + table + "\n",
    )
    write_text_atomic(out / "metrics.json", json.dumps(results, indent=2, default=lambda v: None))
    reporter.result(f"{table}\n\noutputs in {out.resolve()}: segmentations (.seg.nrrd, open in 3D Slicer), overlays (.png), dice.md",
                    output=str(out.resolve()), metrics=results)  # fmt: skip
    return 0
