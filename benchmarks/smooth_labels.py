"""Labels from resampled probabilities against labels copied to the nearest voxels, side by side.

    python benchmarks/smooth_labels.py [--model NAME_OR_BUNDLE ...] [--repeats 1] [--threads 1]

For each model and each real labelled scan of ``../shared/data`` (read into memory first, not timed),
two normal-quality Segmenters run alternately: one as shipped (on a grid finer than the model's, the
organ borders come from the class probabilities resampled linearly onto the scan,
``Quality.smooth_labels``), one with that step off (the model-space labels copied to the nearest
voxels). Per scan: Dice of each against the reference label map for the scan's scored organs, and the
best CPU seconds of each with their ratio. Results: ``benchmarks/results/smooth_labels.{json,md}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.results_files import save_results  # noqa: E402
from training.real_scans import REAL_SCANS, SHARED_DATA  # noqa: E402

VARIANTS = ("smooth", "nearest")


def measure(models: list[str | None], repeats: int, data: Path = SHARED_DATA, scans=REAL_SCANS) -> list[dict]:
    import numpy as np

    from MultiModalSegLib.inference import QUALITIES, Segmenter
    from MultiModalSegLib.io import read_image
    from MultiModalSegLib.labels import ABDOMEN_LABELS
    from MultiModalSegLib.metrics import dice_scores

    nearest = dataclasses.replace(QUALITIES["normal"], smooth_labels=False)
    rows = []
    for model in models:
        segmenters = {"smooth": Segmenter(model, device="cpu", amp=False, quality="normal"),
                      "nearest": Segmenter(model, device="cpu", amp=False, quality=nearest)}
        name = f"{segmenters['smooth'].bundle.name} {segmenters['smooth'].bundle.metadata.get('version', '')}".strip()
        for scan in scans:
            volume = read_image(scan.image(data))
            reference = scan.reference(volume, data)
            cpu = dict.fromkeys(VARIANTS, float("inf"))
            dice = {}
            for r in range(repeats):
                for variant in VARIANTS if r % 2 == 0 else VARIANTS[::-1]:
                    c0 = time.process_time()
                    labels = segmenters[variant].segment(volume, scan.modality).labels.array
                    cpu[variant] = min(cpu[variant], time.process_time() - c0)
                    scores = dice_scores(labels, reference, ABDOMEN_LABELS)
                    dice[variant] = {o: (None if np.isnan(scores[o]) else round(float(scores[o]), 4)) for o in scan.organs}
            rows.append({"model": name, "scan": scan.name, "size": list(volume.size),
                         "spacing": [round(float(s), 4) for s in volume.spacing], "dice": dice,
                         "cpu_s": {v: round(cpu[v], 3) for v in VARIANTS},
                         "cpu_ratio": round(cpu["smooth"] / cpu["nearest"], 2)})
    return rows


def _dice_text(dice: dict) -> str:
    return ", ".join("n/a" if v is None else f"{v:.3f}" for v in dice.values())


def markdown(rows: list[dict], threads: int, repeats: int) -> str:
    lines = ["| model | scan (x y z, mm) | organs | Dice, resampled probabilities | Dice, nearest voxels | "
             "CPU s (resampled / nearest) | ratio |", "|---|---|---|---|---|---|---:|"]
    for r in rows:
        organs = list(r["dice"]["smooth"])
        spacing = " x ".join(f"{s:g}" for s in r["spacing"])
        lines.append(f"| {r['model']} | {r['scan']} ({'x'.join(map(str, r['size']))}, {spacing}) | {', '.join(organs)} | "
                     f"{_dice_text(r['dice']['smooth'])} | {_dice_text(r['dice']['nearest'])} | "
                     f"{r['cpu_s']['smooth']:.2f} / {r['cpu_s']['nearest']:.2f} | {r['cpu_ratio']:.2f} |")
    lines += ["", f"Normal quality, both variants alternating, best of {repeats} CPU time each; {threads} PyTorch "
              f"thread(s); {platform.machine()}. References: the scans' TotalSegmentator label maps. "
              "Regenerate: `python benchmarks/smooth_labels.py --model ... --threads 1`.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="model name or bundle (repeat; default: the default model)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    rows = measure(args.model or [None], args.repeats)
    record = {"rows": rows, "threads": args.threads, "repeats": args.repeats, "machine": platform.machine()}
    text = markdown(rows, args.threads, args.repeats)
    save_results(args.out, "smooth_labels", record, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
