"""Does a model miss an organ of a real scan for its anatomy or for its appearance?

    python training/anatomy_or_appearance.py --bundle 3.0.0=Resources/Models/abdomen-ummkd-synth-3.0.0.zip \
        --bundle v22=training/runs-in-progress/abdomen-ummkd-synth-22/bundle --out training/reports/anatomy-or-appearance

Each model segments the real scan (default: the left-out MR, ``abdomen_mr_01``) and images drawn from
that scan's own label map on its grid (:mod:`training.drawn_images`): as a portal-venous CT, through
the model's CT branch, and as MR of each weighting, through its MR branch. The anatomy is the scan's
in every image. An organ found in the drawn CT and missed in the drawn MR is missed by the MR branch
for what it makes of that anatomy under MR contrasts, not for the scan's own intensities; one found in
the drawn MR and missed in the real scan, for the scan's intensities. Drawn images are phantoms:
they explain a real-scan result, never replace it. Writes ``anatomy_or_appearance.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from benchmarks.results_files import save_results  # noqa: E402
from MultiModalSegLib.labels import ABDOMEN_LABELS  # noqa: E402
from training.drawn_images import drawn_ct, drawn_mr, scan_anatomy  # noqa: E402
from training.evaluate_real_scans import trained_case_names  # noqa: E402
from training.probability_ensembles import named_bundle  # noqa: E402
from training.real_scans import SHARED_DATA, abdomen_labels, real_scan  # noqa: E402

DEFAULT_WEIGHTINGS = ("T1", "fat", "in_phase", "T2")


def images(scan_name: str, weightings: tuple[str, ...], data: Path) -> list[tuple[str, str, object, np.ndarray]]:
    """(image, modality, volume, reference) for the real scan, its anatomy drawn as CT, and as MR of
    each weighting."""
    scan = real_scan(scan_name)
    anatomy = scan_anatomy(scan, data)
    found = [("real", scan.modality, anatomy.source, abdomen_labels(anatomy.structures)), ("drawn CT", "CT", *drawn_ct(anatomy))]
    return found + [(f"drawn MR {w}", "MR", *drawn_mr(anatomy, w)) for w in weightings]


def measure(bundles: dict[str, Path], scan_name: str, weightings: tuple[str, ...], data: Path) -> list[dict]:
    """One row per model and image: Dice per organ (normal quality, the inference the bundle declares)."""
    from MultiModalSegLib.bundle import load_bundle
    from MultiModalSegLib.inference import Segmenter
    from MultiModalSegLib.metrics import evaluate_labels

    drawn = images(scan_name, weightings, data)
    organs = [lab.name for lab in ABDOMEN_LABELS]
    rows = []
    for name, path in bundles.items():
        trained = scan_name in trained_case_names(load_bundle(path).metadata)
        seg = Segmenter(path, device="cpu", amp=False, quality="normal")
        for image, modality, volume, reference in drawn:
            labels = np.asarray(seg.segment(volume, modality).labels.array)
            metrics = evaluate_labels(labels, reference, ABDOMEN_LABELS, volume.spacing)
            rows.append({"model": name, "image": image, "modality": modality, "trained_on_scan": trained,
                         "dice": {o: round(float(metrics[o]["dice"]), 4) for o in organs}})
    return rows


def markdown(rows: list[dict]) -> str:
    organs = [lab.name for lab in ABDOMEN_LABELS]
    lines = ["| model | image | branch | " + " | ".join(organs) + " | mean |", "|---|---|---|" + "---:|" * (len(organs) + 1)]
    for r in rows:
        name = r["model"] + (" (trained on the scan)" if r["trained_on_scan"] else "")
        cells = [f"{r['dice'][o]:.3f}" for o in organs]
        lines.append(f"| {name} | {r['image']} | {r['modality']} | " + " | ".join(cells) + f" | {np.mean(list(r['dice'].values())):.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A model on a real scan and on that scan's anatomy drawn as CT and as MR.")
    parser.add_argument("--bundle", action="append", required=True, type=named_bundle, help="name=bundle path (repeatable)")
    parser.add_argument("--scan", default="abdomen_mr_01", help="a real scan with all four organs (default: the left-out MR)")
    parser.add_argument("--weighting", action="append", help=f"MR weightings to draw (default: {', '.join(DEFAULT_WEIGHTINGS)})")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=SHARED_DATA, help=f"the real scans' folder (default {SHARED_DATA})")
    args = parser.parse_args(argv)
    bundles = dict(args.bundle)
    weightings = tuple(args.weighting or DEFAULT_WEIGHTINGS)
    rows = measure(bundles, args.scan, weightings, args.data)
    command = ("python training/anatomy_or_appearance.py " + " ".join(f"--bundle {n}={p}" for n, p in bundles.items())
               + f" --scan {args.scan} " + " ".join(f"--weighting {w}" for w in weightings) + f" --out {args.out}")
    text = (
        f"# Anatomy or appearance: `{args.scan}`\n\n"
        "Dice against the scan's TotalSegmentator pseudo-labels: on the real scan, and on images drawn from its "
        "own label map (its anatomy) as a portal-venous CT (the model's CT branch) and as MR of each weighting "
        "(its MR branch); normal quality, each model with the inference its bundle declares. Drawn images are "
        f"phantoms: they explain the real row, never replace it. Regenerate: `{command}`.\n\n" + markdown(rows) + "\n"
    )
    save_results(args.out, "anatomy_or_appearance", rows, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
