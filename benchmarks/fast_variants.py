"""What may ``--quality fast`` change? CPU seconds and Dice of sliding-window variants on the real scans.

    python benchmarks/fast_variants.py [--model NAME_OR_BUNDLE] [--repeats 2] [--threads 1]

For each real labelled scan (``training/real_scans.py``), the ``normal`` Segmenter and one Segmenter
per candidate ``fast`` variant segment the scan in turn (the order flips every repeat); the best CPU
seconds of ``--repeats`` runs and the Dice against the scan's reference labels are kept, and each
variant's CPU ratio and Dice change against ``normal`` are printed in one table. The variants
(:func:`variants`): the shipped ``fast``; windows of the training patch or up to twice it, overlap
0 or 0.25, constant or Gaussian blending, on every volume or only where they save enough, in
bfloat16 (where the CPU computes it natively) or float32; and the
network run on a 10 % or 20 % coarser grid (the training recipes scale patches by up to 10 % for
real scans and 15 % for synthesised images, which bounds the scales worth trying). Results: ``benchmarks/results/fast_variants.{json,md}``.
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
from training.real_scans import REAL_SCANS, SHARED_DATA  # noqa: E402

SHARED = SHARED_DATA


def variants() -> dict:
    """Name -> :class:`Quality`: ``normal``, the shipped ``fast``, and the candidates."""
    from MultiModalSegLib.inference import QUALITIES, Quality

    fast = QUALITIES["fast"]
    return {
        "normal": QUALITIES["normal"],
        "fast (shipped)": fast,
        "fast in float32": dataclasses.replace(fast, cpu_bfloat16=False),
        "patch windows, overlap 0, on every volume": dataclasses.replace(fast, min_saving=1.0),
        "2x windows, overlap 0": Quality(window_scale=2, overlap=0.0, mode="constant"),
        "patch windows, overlap 0.25, Gaussian": Quality(window_scale=1, overlap=0.25, mode="gaussian"),
        "2x windows, overlap 0.25, Gaussian": Quality(window_scale=2, overlap=0.25, mode="gaussian"),
        "fast on a 1.1x grid": dataclasses.replace(fast, spacing_scale=1.1),
        "fast on a 1.2x grid": dataclasses.replace(fast, spacing_scale=1.2),
    }


def measure(model: str | None, repeats: int, data: Path = SHARED, scans=REAL_SCANS, names: list[str] | None = None) -> list[dict]:
    import numpy as np

    from MultiModalSegLib.inference import Segmenter
    from MultiModalSegLib.io import read_image
    from MultiModalSegLib.labels import ABDOMEN_LABELS
    from MultiModalSegLib.metrics import dice_scores

    chosen = {k: q for k, q in variants().items() if k == "normal" or names is None or k in names}
    segmenters = {name: Segmenter(model, device="cpu", amp=False, quality=q) for name, q in chosen.items()}
    rows = []
    for scan in scans:
        name, modality, organs = scan.name, scan.modality, scan.organs
        volume = read_image(scan.image(data))
        ref = scan.reference(volume, data)
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
              "Regenerate: `python benchmarks/fast_variants.py`."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="manifest name or bundle (default: the default model)")
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
        "rows": measure(args.model, args.repeats),
    }
    text = markdown(record)
    save_results(args.results, "fast_variants", record, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
