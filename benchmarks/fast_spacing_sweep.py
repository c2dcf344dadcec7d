"""How coarse may ``--quality fast`` run? CPU seconds and Dice on the real scans, side by side.

    python benchmarks/fast_spacing_sweep.py [--model NAME_OR_BUNDLE] [--scales 1.0 1.1 1.15 1.2] [--threads 1]

For each real labelled scan of ``../shared/data``, the ``normal`` Segmenter and one ``fast``
Segmenter per spacing scale (the network runs at the model's voxel size times the scale: fewer
voxels, objects slightly smaller than in training) segment the scan in turn; the best CPU seconds
of ``--repeats`` alternating runs and the Dice against the scan's reference labels are kept, and
each fast variant's CPU ratio and Dice change against ``normal`` are printed in one table. The
training recipes scale patches by up to 10 % (real scans) and 15 % (synthesised images), which
bounds the scales worth trying. Results: ``benchmarks/results/fast_spacing_sweep.{json,md}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.fast_quality import _timed  # noqa: E402
from benchmarks.results_files import save_results  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
SCANS = (("chest_abdomen_ct_02", "CT", ("liver", "spleen")),
         ("abdomen_ct_01", "CT", ("liver", "spleen", "kidney_right", "kidney_left")),
         ("abdomen_mr_01", "MR", ("liver", "spleen", "kidney_right", "kidney_left")))


def measure(model: str | None, scales: list[float], repeats: int, data: Path = SHARED, scans=SCANS) -> list[dict]:
    import numpy as np

    from MultiModalSegLib.inference import QUALITIES, Segmenter
    from MultiModalSegLib.io import read_image, read_labelmap
    from MultiModalSegLib.labels import ABDOMEN_LABELS, LABEL_REMAPS
    from MultiModalSegLib.metrics import dice_scores, remap_labels

    variants = {"normal": QUALITIES["normal"]}
    variants |= {f"fast x{k:g}": dataclasses.replace(QUALITIES["fast"], spacing_scale=k) for k in scales}
    segmenters = {name: Segmenter(model, device="cpu", amp=False, quality=q) for name, q in variants.items()}
    rows = []
    for name, modality, organs in scans:
        volume = read_image(data / name / "image.nii.gz")
        ref = remap_labels(read_labelmap(data / name / "label_totalseg.nii.gz", reference=volume).array,
                           LABEL_REMAPS["totalsegmentator"])
        best = {v: float("inf") for v in segmenters}
        dice = {}
        for r in range(repeats):
            for variant in (list(segmenters) if r % 2 == 0 else list(segmenters)[::-1]):
                cpu, _, result = _timed(lambda s=segmenters[variant], v=volume, m=modality: s.segment(v, m))
                best[variant] = min(best[variant], cpu)
                scores = dice_scores(np.asarray(result.labels.array), ref, ABDOMEN_LABELS)
                dice[variant] = {o: round(float(scores[o]), 4) for o in organs}
        for variant in segmenters:
            mean = float(np.mean(list(dice[variant].values())))
            rows.append({
                "scan": name, "modality": modality, "variant": variant, "cpu_s": round(best[variant], 3),
                "ratio_cpu": round(best[variant] / best["normal"], 3), "dice": dice[variant],
                "mean_dice": round(mean, 4),
                "mean_dice_change": round(mean - float(np.mean(list(dice["normal"].values()))), 4),
            })
    return rows


def markdown(record: dict) -> str:
    lines = ["| scan | quality | CPU s | / normal | Dice per organ | mean Dice | change vs normal |",
             "|---|---|---:|---:|---|---:|---:|"]
    for r in record["rows"]:
        per_organ = ", ".join(f"{o} {v:.3f}" for o, v in r["dice"].items())
        lines.append(f"| {r['scan']} | {r['variant']} | {r['cpu_s']:.2f} | {r['ratio_cpu']:.2f} | {per_organ} | "
                     f"{r['mean_dice']:.3f} | {r['mean_dice_change']:+.3f} |")
    lines += ["", f"Model {record['model']}; {record['threads']} PyTorch thread(s); best of {record['repeats']} "
              f"alternating runs; {record['machine']}. Dice against the TotalSegmentator reference labels. "
              "Regenerate: `python benchmarks/fast_spacing_sweep.py`."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="manifest name or bundle (default: the default model)")
    p.add_argument("--scales", type=float, nargs="+", default=[1.0, 1.1, 1.15, 1.2], help="default: 1.0 1.1 1.15 1.2")
    p.add_argument("--repeats", type=int, default=2, help="default: 2")
    p.add_argument("--threads", type=int, default=1, help="default: 1")
    p.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results", help="default: benchmarks/results")
    args = p.parse_args(argv)
    import torch

    from MultiModalSegLib.bundle import load_bundle
    from MultiModalSegLib.models import resolve_model

    torch.set_num_threads(args.threads)
    meta = load_bundle(resolve_model(args.model)[0]).metadata
    record = {
        "model": f"{meta['name']} {meta['version']}", "threads": args.threads, "repeats": args.repeats,
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} CPU cores",
        "rows": measure(args.model, args.scales, args.repeats),
    }
    text = markdown(record)
    save_results(args.results, "fast_spacing_sweep", record, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
