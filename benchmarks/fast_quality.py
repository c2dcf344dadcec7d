"""Fast against normal quality: CPU seconds of ``Segmenter.segment`` on the real scans, side by side.

    python benchmarks/fast_quality.py [--model NAME_OR_BUNDLE] [--repeats 2] [--threads 1]

For each real scan of ``../shared/data`` (read into memory first, not timed), the two qualities'
Segmenters run alternately (the order flips every repeat), ``--repeats`` times each; the best CPU
seconds (every thread of this process) and wall seconds of each are kept, with their ratio, and
the Dice agreement of the fast labels with the normal ones per organ. Acceptance: fast takes at
most a third of normal's CPU time on the largest scan. Results:
``benchmarks/results/fast_quality.{json,md}``.
"""

from __future__ import annotations

import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.model_command import model_label, model_run_arguments  # noqa: E402
from benchmarks.results_files import save_results  # noqa: E402
from training.real_scans import REAL_SCANS, SHARED_DATA  # noqa: E402

SHARED = SHARED_DATA
LIMIT = 1 / 3


def _timed(fn) -> tuple[float, float, object]:
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn()
    return time.process_time() - c0, time.perf_counter() - w0, out


def measure(model: str | None, repeats: int, data: Path = SHARED, scans=REAL_SCANS) -> list[dict]:
    import numpy as np

    from MultiModalSegLib.inference import Segmenter
    from MultiModalSegLib.io import read_image
    from MultiModalSegLib.labels import ABDOMEN_LABELS
    from MultiModalSegLib.metrics import dice_scores

    segmenters = {q: Segmenter(model, device="cpu", amp=False, quality=q) for q in ("normal", "fast")}
    rows = []
    for scan in scans:
        name, modality = scan.name, scan.modality
        volume = read_image(scan.image(data))
        best: dict[str, list[float]] = {q: [float("inf"), float("inf")] for q in segmenters}
        labels = {}
        for r in range(repeats):
            order = list(segmenters) if r % 2 == 0 else list(segmenters)[::-1]
            for quality in order:
                cpu, wall, result = _timed(lambda q=quality, v=volume, m=modality: segmenters[q].segment(v, m))
                best[quality] = [min(best[quality][0], cpu), min(best[quality][1], wall)]
                labels[quality] = result.labels.array
        agreement = {k: (None if np.isnan(v) else round(float(v), 4))
                     for k, v in dice_scores(labels["fast"], labels["normal"], ABDOMEN_LABELS).items()}
        rows.append({
            "scan": name, "size_xyz": list(volume.size),
            "normal_cpu_s": round(best["normal"][0], 4), "fast_cpu_s": round(best["fast"][0], 4),
            "normal_wall_s": round(best["normal"][1], 4), "fast_wall_s": round(best["fast"][1], 4),
            "ratio_cpu": round(best["fast"][0] / best["normal"][0], 3),
            "ratio_wall": round(best["fast"][1] / best["normal"][1], 3),
            "fast_vs_normal_dice": agreement,
        })
    return rows


def markdown(record: dict) -> str:
    head = "| scan (x y z) | normal CPU s | fast CPU s | fast / normal CPU | normal wall s | fast wall s | fast / normal wall | Dice fast vs normal (liver, spleen, kidneys) |"
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in record["rows"]:
        dice = ", ".join("-" if v is None else f"{v:.3f}" for v in r["fast_vs_normal_dice"].values())
        lines.append(f"| {r['scan']} ({'x'.join(map(str, r['size_xyz']))}) | {r['normal_cpu_s']:.2f} | {r['fast_cpu_s']:.2f} | "
                     f"{r['ratio_cpu']:.2f} | {r['normal_wall_s']:.2f} | {r['fast_wall_s']:.2f} | {r['ratio_wall']:.2f} | {dice} |")
    check = record["acceptance"]
    lines += ["", f"Model {record['model']}; {record['threads']} PyTorch thread(s); best of {record['repeats']} alternating runs; "
              f"{record['machine']}. Regenerate: `python benchmarks/fast_quality.py --threads {record['threads']}`.",
              f"- fast / normal CPU on {check['scan']}: {check['value']:.2f} (limit {LIMIT:.2f}): {'pass' if check['passed'] else 'FAIL'}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = model_run_arguments(argv, __doc__.splitlines()[0], repeats=2, threads=1)
    rows = measure(args.model, args.repeats)
    largest = max(rows, key=lambda r: r["size_xyz"][0] * r["size_xyz"][1] * r["size_xyz"][2])
    record = {
        "model": model_label(args.model), "threads": args.threads, "repeats": args.repeats,
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} CPU cores", "rows": rows,
        "acceptance": {"scan": largest["scan"], "value": largest["ratio_cpu"], "limit": LIMIT, "passed": largest["ratio_cpu"] <= LIMIT},
    }
    text = markdown(record)
    save_results(args.results, "fast_quality", record, text)
    print(text)
    return 0 if record["acceptance"]["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
