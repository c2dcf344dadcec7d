"""An MR ensemble against one pass, side by side: real MR scans, then MR drawn per weighting.

    python benchmarks/polarity_ensemble.py [--model NAME_OR_BUNDLE ...] [--threads 1]
    python benchmarks/polarity_ensemble.py --ensemble normalisation [--model ...]

For each model, the same normal-quality Segmenter segments each image twice, alternately: with one
pass of the network, and with the ensemble, whatever the bundle itself asks. ``polarity`` (the default):
the mean of the class probabilities of the image and of its negative (``inference.polarity_ensemble``,
:mod:`MultiModalSegLib.data.polarity`). ``normalisation``: the mean of those of the image normalised at the
profile's bounds, halfway to its other foreground choice's and at those (``inference.normalisation_ensemble``
with fractions 0, 0.5 and 1, :func:`MultiModalSegLib.data.profile_jitter.normalize_blended`). Images:

1. every real labelled MR scan of ``../shared/data``, with its role for the model (``left out``: its
   recipe excluded it; ``train``);
2. whole-volume MR images drawn from the label maps of the real training scans, one per weighting of
   :data:`MultiModalSegLib.data.tissues.MR_SIGNAL` (T1, T1 after contrast, T2, Dixon water, fat,
   in-phase, opposed-phase; :mod:`training.drawn_images`): each structure at its tissue's signal in that table, the voxels the map
   leaves unlabelled at the signal of air, fat or soft tissue as their own intensity says (CT: the
   synthesiser's HU bins; MR: below 5 % of the 99th percentile air, above half of it fat), then a
   blur of 0.7 voxel and noise of 2 % (one seed). These measure the ensemble across weightings on
   the scans' own anatomy; every synthesis-trained model drew its training images from these maps
   with randomised signals, so they are phantoms, second to the real scans.

Dice per scored organ and its mean; for the real scans also the stability under a smooth bias field
(the receive-coil shading of about +-25 % that ``Testing/library/inference/test_robust_inputs.py``
applies, and one of about +-50 %): the lowest Dice of an organ between the segmentation with and
without the field (the test asks more than 0.85 of the default model), and the mean Dice against the
reference under each field. Results: ``benchmarks/results/polarity_ensemble.{json,md}`` and
``normalisation_ensemble.{json,md}``.
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from benchmarks.results_files import save_results  # noqa: E402
from training.drawn_images import drawn_mr, scan_anatomy  # noqa: E402
from training.real_scans import REAL_SCANS, SHARED_DATA, abdomen_labels  # noqa: E402

VARIANTS = ("single", "ensemble")
DRAWN_FROM = ("abdomen_mr_01", "abdomen_ct_01")  # training scans' label maps (never the validation scan's)
# the Segmenter attribute an ensemble sets, its value with the ensemble on and off, and what the bundle records
ENSEMBLES = {
    "polarity": ("polarity_ensemble", frozenset({"MR"}), frozenset(), "inference.polarity_ensemble"),
    "normalisation": ("normalisation_ensemble", {"MR": (0.0, 0.5, 1.0)}, {}, "inference.normalisation_ensemble"),
}
BIAS_FIELDS = {"shading 25 %": (0.25, -0.2, 0.1), "shading 50 %": (0.4, 0.3, 0.0)}  # exp(a x + b y + c z), axes in [-1, 1]


def biased(volume, coefficients: tuple[float, float, float]):
    """``volume`` times the smooth field ``exp(a x + b y + c z)`` (x, y, z from -1 to 1 across the array)."""
    from MultiModalSegLib.io import Volume

    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n, dtype=np.float32) for n in volume.array.shape], indexing="ij")
    a, b, c = coefficients
    field = np.exp(a * x + b * y + c * z).astype(np.float32)
    return Volume(np.asarray(volume.array, np.float32) * field, volume.spacing, volume.origin, volume.direction)


def measure(models: list[str | None], data: Path = SHARED_DATA, scans=REAL_SCANS, drawn_from=DRAWN_FROM,
            weightings: tuple[str, ...] | None = None, ensemble: str = "polarity") -> list[dict]:
    from MultiModalSegLib.data.tissues import MR_SIGNAL
    from MultiModalSegLib.inference import Segmenter
    from MultiModalSegLib.io import read_image
    from MultiModalSegLib.labels import ABDOMEN_LABELS
    from MultiModalSegLib.metrics import dice_scores
    from training.evaluate_real_scans import role, trained_case_names

    # every image is read or drawn once, for all models; a scan both segmented and drawn from is read once
    by_name = {s.name: s for s in scans}
    anatomies = {n: scan_anatomy(by_name[n], data) for n in drawn_from if n in by_name}
    real = []
    for scan in (s for s in scans if s.modality == "MR"):
        if scan.name in anatomies:
            real.append((scan, anatomies[scan.name].source, abdomen_labels(anatomies[scan.name].structures)))
        else:
            volume = read_image(scan.image(data))
            real.append((scan, volume, scan.reference(volume, data)))
    drawn = [(by_name[n], f"drawn {weighting}", "phantom", *drawn_mr(anatomy, weighting))
             for n, anatomy in anatomies.items() for weighting in weightings or tuple(MR_SIGNAL)]
    rows = []
    for model in models:
        segmenter = Segmenter(model, device="cpu", amp=False, quality="normal")
        attribute, on, off, _ = ENSEMBLES[ensemble]
        own = getattr(segmenter, attribute)
        name = f"{segmenter.bundle.name} {segmenter.bundle.metadata.get('version', '')}".strip()
        trained = trained_case_names(segmenter.bundle.metadata)
        images = [(scan, "real", role({"name": scan.name, "project_role": scan.project_role}, trained), volume, reference)
                  for scan, volume, reference in real] + drawn
        try:
            for i, (scan, image, kind, volume, reference) in enumerate(images):
                dice = {}
                stability: dict = {}
                for variant in VARIANTS if i % 2 == 0 else VARIANTS[::-1]:
                    setattr(segmenter, attribute, on if variant == "ensemble" else off)
                    labels = segmenter.segment(volume, "MR").labels.array
                    scores = dice_scores(labels, reference, ABDOMEN_LABELS)
                    dice[variant] = {o: round(float(scores[o]), 4) for o in scan.organs}
                    if image == "real":
                        stability[variant] = {}
                        for field, coefficients in BIAS_FIELDS.items():
                            shaded = segmenter.segment(biased(volume, coefficients), "MR").labels.array
                            agreement = dice_scores(shaded, labels, ABDOMEN_LABELS)
                            against = dice_scores(shaded, reference, ABDOMEN_LABELS)
                            stability[variant][field] = {
                                # an organ empty with and without the field agrees (Dice of two empty masks: NaN)
                                "lowest_agreement": round(float(min(np.nan_to_num(agreement[o], nan=1.0) for o in scan.organs)), 4),
                                "mean_dice": round(float(np.mean([against[o] for o in scan.organs])), 4)}
                rows.append({"model": name, "model_asks": "MR" in own, "scan": scan.name, "image": image, "role": kind,
                             "dice": dice, "mean": {v: round(float(np.mean(list(dice[v].values()))), 4) for v in VARIANTS},
                             **({"bias_field": stability} if stability else {})})
        finally:
            setattr(segmenter, attribute, own)
    return rows


def markdown(rows: list[dict], threads: int, ensemble: str = "polarity") -> str:
    lines = ["| model | scan | image | role | Dice, one pass (liver / spleen / kidneys) | Dice, ensemble | mean, one pass | "
             "mean, ensemble | change |", "|---|---|---|---|---|---|---:|---:|---:|"]
    for r in rows:
        cells = [" / ".join(f"{d:.3f}" for d in r["dice"][v].values()) for v in VARIANTS]
        lines.append(f"| {r['model']}{' (asks for it)' if r['model_asks'] else ''} | {r['scan']} | {r['image']} | {r['role']} | "
                     f"{cells[0]} | {cells[1]} | {r['mean']['single']:.3f} | {r['mean']['ensemble']:.3f} | "
                     f"{r['mean']['ensemble'] - r['mean']['single']:+.3f} |")
    lines += ["", "| model | images | mean, one pass | mean, ensemble | change |", "|---|---|---:|---:|---:|"]
    for model in dict.fromkeys(r["model"] for r in rows):
        for label, keep in (("real MR, left out", lambda r: r["role"] == "left out"), ("real MR, trained on", lambda r: r["role"] == "train"),
                            ("drawn MR, every weighting", lambda r: r["role"] == "phantom")):
            chosen = [r for r in rows if r["model"] == model and keep(r)]
            if chosen:
                single, both = (float(np.mean([r["mean"][v] for r in chosen])) for v in VARIANTS)
                lines.append(f"| {model} | {label} ({len(chosen)}) | {single:.3f} | {both:.3f} | {both - single:+.3f} |")
    real = [r for r in rows if "bias_field" in r]
    if real:
        lines += ["", "Real MR under a smooth bias field: lowest organ Dice between the segmentations with and without "
                  "the field (agreement), and mean Dice against the reference under the field:", "",
                  "| model | scan | field | agreement, one pass | agreement, ensemble | mean Dice, one pass | "
                  "mean Dice, ensemble |", "|---|---|---|---:|---:|---:|---:|"]
        for r in real:
            for field in BIAS_FIELDS:
                one, both = (r["bias_field"][v][field] for v in VARIANTS)
                lines.append(f"| {r['model']} | {r['scan']} | {field} | {one['lowest_agreement']:.3f} | "
                             f"{both['lowest_agreement']:.3f} | {one['mean_dice']:.3f} | {both['mean_dice']:.3f} |")
    lines += ["", f"Normal quality; each image segmented by the same Segmenter with one pass and with the ensemble, alternating "
              f"which runs first; {threads} PyTorch thread(s); {platform.machine()}. References: the scans' TotalSegmentator "
              f"label maps. `(asks for it)`: the bundle records `{ENSEMBLES[ensemble][3]}` and segments MR with the ensemble "
              "by itself. Regenerate: `python benchmarks/polarity_ensemble.py "
              + ("" if ensemble == "polarity" else f"--ensemble {ensemble} ") + "--model ... --threads 1`.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="model name or bundle (repeat; default: the default model)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ensemble", choices=list(ENSEMBLES), default="polarity", help="which MR ensemble (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    rows = measure(args.model or [None], ensemble=args.ensemble)
    record = {"rows": rows, "threads": args.threads, "machine": platform.machine(), "ensemble": args.ensemble}
    text = markdown(rows, args.threads, args.ensemble)
    save_results(args.out, f"{args.ensemble}_ensemble", record, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
