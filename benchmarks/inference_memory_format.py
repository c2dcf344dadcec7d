"""Seconds of ``Segmenter.segment`` on the CPU with the convolutions in the default layout and
channels-last (``Segmenter(cpu_channels_last=...)``, true by default), side by side on the real scans.

    python benchmarks/inference_memory_format.py [--model NAME_OR_BUNDLE] [--repeats 3] [--threads 2]

Two Segmenters of one model, one left in PyTorch's default layout and one channels-last
(``MultiModalSegLib.device.cpu_channels_last``), segment each real scan of ``../shared/data`` (read into
memory first, not timed) in turn, the order flipped every repeat; a layout's figure is the median of its
wall seconds, the ratio the default layout's over channels-last's. Both compute in float32: their labels
differ only where the order of the sums tips a voxel, which the share of voxels that agree and the Dice
agreement per organ show. Results: ``benchmarks/results/inference_memory_format.{json,md}``.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.model_command import model_label, model_run_arguments  # noqa: E402
from benchmarks.recipe_step import machine  # noqa: E402
from benchmarks.results_files import save_results  # noqa: E402
from training.real_scans import REAL_SCANS, SHARED_DATA  # noqa: E402

LAYOUTS = ("contiguous", "channels_last")


def measure(model: str | None, repeats: int, data: Path = SHARED_DATA, scans=REAL_SCANS) -> list[dict]:
    """One row per scan: each layout's wall seconds and their medians, the ratio, and how far the labels agree."""
    import numpy as np

    from MultiModalSegLib.inference import Segmenter
    from MultiModalSegLib.io import read_image
    from MultiModalSegLib.labels import ABDOMEN_LABELS
    from MultiModalSegLib.metrics import dice_scores

    segmenters = {layout: Segmenter(model, device="cpu", amp=False, cpu_channels_last=layout == "channels_last")
                  for layout in LAYOUTS}
    if not segmenters["channels_last"].channels_last:
        raise SystemExit(f"model {model or 'default'}: its network keeps the default layout (batch normalisation); nothing to compare.")
    rows = []
    for scan in scans:
        volume = read_image(scan.image(data))
        seconds: dict[str, list[float]] = {layout: [] for layout in LAYOUTS}
        labels = {}
        for r in range(repeats):
            for layout in LAYOUTS if r % 2 == 0 else LAYOUTS[::-1]:
                start = time.perf_counter()
                labels[layout] = segmenters[layout].segment(volume, scan.modality).labels.array
                seconds[layout].append(round(time.perf_counter() - start, 3))
        median = {layout: statistics.median(t) for layout, t in seconds.items()}
        agreement = dice_scores(labels["channels_last"], labels["contiguous"], ABDOMEN_LABELS)
        rows.append({
            "scan": scan.name, "modality": scan.modality, "size_xyz": list(volume.size), "seconds": seconds,
            "median_s": median, "speedup": round(median["contiguous"] / median["channels_last"], 3),
            "voxels_agreeing": float(np.mean(labels["channels_last"] == labels["contiguous"])),
            "dice_agreement": {k: None if np.isnan(v) else round(float(v), 5) for k, v in agreement.items()},
        })
    return rows


def markdown(record: dict) -> str:
    lines = [
        "# Segmenting on the CPU: convolutions in the default layout against channels-last",
        "",
        f"Model {record['model']}, normal quality, float32, {record['threads']} thread(s), processor "
        f"{record['machine']['processor']}, torch {record['machine']['torch']}; median of {record['repeats']} alternating "
        "runs of `Segmenter.segment` each (the whole call: normalisation, resampling, sliding windows, labels). "
        f"Regenerate: `python benchmarks/inference_memory_format.py --repeats {record['repeats']} --threads {record['threads']}`.",
        "",
        "| scan (x y z) | default s | channels-last s | default / channels-last | voxels agreeing | Dice agreement (liver, spleen, kidneys) |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in record["rows"]:
        dice = ", ".join("-" if v is None else f"{v:.4f}" for v in r["dice_agreement"].values())
        lines.append(f"| {r['scan']} ({'x'.join(map(str, r['size_xyz']))}) | {r['median_s']['contiguous']:.2f} | "
                     f"{r['median_s']['channels_last']:.2f} | **{r['speedup']:.2f}x** | {r['voxels_agreeing']:.6f} | {dice} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = model_run_arguments(argv, __doc__.splitlines()[0], repeats=3, threads=2)
    rows = measure(args.model, args.repeats)
    record = {"model": model_label(args.model), "threads": args.threads, "repeats": args.repeats, "machine": machine(), "rows": rows}
    text = markdown(record)
    save_results(args.results, "inference_memory_format", record, text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
