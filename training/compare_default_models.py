"""Two shipped models side by side in one run: held-out phantoms and CPU seconds (phantoms second).

    python training/compare_default_models.py \
        --models Resources/Models/abdomen-cmc-2.0.0.zip Resources/Models/abdomen-ummkd-synth-3.0.0.zip

Both bundles segment the same ``--phantoms`` held-out synthetic phantoms per modality, drawn with
``--seed`` (1001: a seed no training recipe uses), in the same process through the ordinary
``Segmenter``; then each segments the real scans (``training/real_scans.py``) in turn, the models
alternating, best of ``--repeats``, so that their seconds are measured side by side. Dice on the
real scans, which come first in every model choice, is ``training/evaluate_real_scans.py``'s table:
there each scan is labelled with its role for each model (validation, left out, train), which
differs between models. Writes ``comparison.md`` and ``comparison.json`` to ``--out`` (default
``training/reports/default-models``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "training" / "experiments"))

from compare_methods import ORGANS, _f, _mean, evaluate_bundle, splice_readme, test_cases  # noqa: E402

from MultiModalSegLib.atomic import write_text_atomic  # noqa: E402
from MultiModalSegLib.bundle import bundle_sha256, load_bundle  # noqa: E402
from training.real_scans import REAL_SCANS, real_scan  # noqa: E402

MODALITIES = ("CT", "MR")
OUT = REPO / "training" / "reports" / "default-models"
WORK = REPO / "training" / "runs" / "default-models"


def model_name(metadata: dict) -> str:
    return f"{metadata['name']} {metadata['version']}"


def held_out_phantoms(n: int, seed: int, work: Path = WORK) -> Path:
    from MultiModalSegLib.data.phantoms import write_phantom_dataset

    path = work / f"phantoms_test_{n}_seed{seed}" / "dataset.json"
    if not path.exists():
        write_phantom_dataset(path.parent, n, n, seed)
    return path


def timings(bundles: list[Path], repeats: int, scans: list[str] | None = None) -> dict[str, dict[str, float]]:
    """Bundle path -> real scan -> best wall seconds of ``Segmenter.segment`` (models alternate), on the
    real scans named in ``scans`` (default: every one)."""
    from MultiModalSegLib.inference import Segmenter
    from MultiModalSegLib.io import read_image

    chosen = REAL_SCANS if scans is None else [real_scan(name) for name in scans]
    cases = [{"name": r.name, "image": r.image(), "modality": r.modality} for r in chosen]
    images = {c["name"]: (read_image(c["image"]), c["modality"]) for c in cases}
    segmenters = {str(b): Segmenter(b, device="cpu", amp=False) for b in bundles}
    best: dict[str, dict[str, float]] = {str(b): {} for b in bundles}
    for _ in range(repeats):
        for name, seg in segmenters.items():
            for case, (image, modality) in images.items():
                t = time.perf_counter()
                seg.segment(image, modality)
                seconds = time.perf_counter() - t
                best[name][case] = round(min(best[name].get(case, seconds), seconds), 2)
    return best


def modality_table(results: dict[str, dict], kind: str, metric: str) -> list[str]:
    head = ["model"] + [f"{o} {m}" for m in MODALITIES for o in ORGANS] + [f"mean {m}" for m in MODALITIES]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for name, res in results.items():
        cells, means = [], []
        for m in MODALITIES:
            cases = [c for c in res.values() if c["kind"] == kind and c["modality"] == m]
            per = [_mean([c["metrics"][o][metric] for c in cases]) for o in ORGANS]
            cells += [_f(v, 3 if metric == "dice" else 2) for v in per]
            means.append(_mean(per))
        lines.append(f"| `{name}` | " + " | ".join(cells + [_f(v, 3 if metric == 'dice' else 2) for v in means]) + " |")
    return lines


def summary(res: dict, kind: str) -> dict[str, float]:
    """Modality -> mean over organs of the mean over ``kind`` cases of Dice."""
    out = {}
    for m in MODALITIES:
        cases = [c for c in res.values() if c["kind"] == kind and c["modality"] == m]
        out[m] = _mean([_mean([c["metrics"][o]["dice"] for c in cases]) for o in ORGANS])
    return out


def mean_table(doc: dict) -> list[str]:
    lines = ["| model | phantoms CT | phantoms MR | phantoms CT+MR |", "|---|---:|---:|---:|"]
    for n in doc["results"]:
        ph = doc["phantom_mean_dice"][n]
        lines.append(f"| `{n}` | {ph['CT']:.3f} | {ph['MR']:.3f} | {(ph['CT'] + ph['MR']) / 2:.3f} |")
    return lines


def seconds_table(doc: dict) -> list[str]:
    seconds, ratios = doc["seconds"], doc["seconds_ratio_new_over_old"]
    old, new = list(seconds)
    lines = ["| case | " + " | ".join(f"`{n}`" for n in seconds) + " | ratio new/old |", "|---|---:|---:|---:|"]
    return lines + [f"| {case} | {seconds[old][case]:.2f} | {seconds[new][case]:.2f} | {ratios[case]:.2f} |" for case in seconds[old]]


def render_report(doc: dict) -> str:
    """``comparison.md`` from the comparison's JSON document."""
    old, new = list(doc["results"])
    held = doc["held_out_phantoms"]
    L = [
        f"# Default models side by side: `{old}` and `{new}`",
        "",
        f"Generated by `{doc['command']}`; do not edit by hand. Both models segmented the same cases in one run",
        "through the ordinary `Segmenter` (CPU).",
        "",
        f"- Held-out phantoms: {held['per_modality']} CT and {held['per_modality']} MR drawn with seed {held['seed']}, "
        "which no training recipe uses. **Phantoms are not patients.**",
        "- Real scans come first in every model choice: their Dice, with each scan's role for each model (validation,",
        "  left out, train), is in `training/reports/real-scans/real_scans.md`. Here they are only timed.",
        "",
        "## Mean Dice (over organs)",
        "",
        *mean_table(doc),
    ]
    L += ["", "## Dice per organ, held-out phantoms", "", *modality_table(doc["results"], "phantom", "dice")]
    L += ["", "## ASSD (mm) per organ, held-out phantoms", "", *modality_table(doc["results"], "phantom", "assd")]
    L += ["", f"## Inference seconds (best of {doc['repeats']}, the models alternating, 1 process)", "", *seconds_table(doc)]
    L += ["", f"CPU time of this comparison: {doc['cpu_s']:.0f} s.", ""]
    return "\n".join(L)


README = REPO / "README.md"
README_MARKERS = ("<!-- default-models:begin -->", "<!-- default-models:end -->")


def readme_block(doc: dict) -> list[str]:
    return [
        "From `training/reports/default-models/comparison.md` (mean Dice over liver, spleen and both kidneys; "
        f"{doc['held_out_phantoms']['per_modality']} held-out phantoms per modality):",
        "",
        *mean_table(doc),
        "",
        "Dice per organ on the held-out phantoms:",
        "",
        *modality_table(doc["results"], "phantom", "dice"),
        "",
        f"Seconds per real scan (best of {doc['repeats']}, alternating, same process):",
        "",
        *seconds_table(doc),
    ]


def update_readme(doc: dict, readme: Path = README) -> bool:
    """Write :func:`readme_block` between the README's markers; True if it changed."""
    return splice_readme(readme, README_MARKERS, readme_block(doc))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs=2, type=Path, help="the two bundle zips (old, new)")
    p.add_argument("--report-only", action="store_true", help="rebuild comparison.md and the README block from comparison.json")
    p.add_argument("--phantoms", type=int, default=4, help="held-out phantoms per modality")
    p.add_argument("--seed", type=int, default=1001)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--timed-scans", nargs="+", choices=[s.name for s in REAL_SCANS],
                   help="the real scans timed (default: every real scan of the project)")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--work", type=Path, default=WORK, help="where the held-out phantoms are written")
    args = p.parse_args(argv)
    if args.report_only:
        doc = json.loads((args.out / "comparison.json").read_text())
        doc["phantom_mean_dice"] = {n: summary(r, "phantom") for n, r in doc["results"].items()}
        return _write(doc, args.out)
    if not args.models:
        p.error("--models OLD NEW is required (or --report-only)")
    cases = test_cases(held_out_phantoms(args.phantoms, args.seed, args.work), real_cases=())
    results, meta = {}, {}
    t0 = time.process_time()
    names = {}
    for path in args.models:
        bundle = load_bundle(path)
        name = names[str(path)] = model_name(bundle.metadata)
        meta[name] = {"file": str(path), "sha256": bundle_sha256(path), "method": bundle.method}
        results[name] = evaluate_bundle(path, cases)
    seconds = timings(list(args.models), args.repeats, args.timed_scans)
    seconds = {names[str(p)]: seconds[str(p)] for p in args.models}
    old, new = list(results)
    ratios = {case: round(seconds[new][case] / seconds[old][case], 2) for case in seconds[old]}
    doc = {
        "command": "python training/compare_default_models.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "models": meta,
        "held_out_phantoms": {"per_modality": args.phantoms, "seed": args.seed},
        "phantom_mean_dice": {n: summary(r, "phantom") for n, r in results.items()},
        "seconds": seconds,
        "seconds_ratio_new_over_old": ratios,
        "cpu_s": round(time.process_time() - t0, 1),
        "results": results,
    }
    doc["repeats"] = args.repeats
    return _write(doc, args.out)


def _write(doc: dict, out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "comparison.json", json.dumps(doc, indent=1) + "\n")
    report = render_report(doc)
    write_text_atomic(out / "comparison.md", report)
    if out == OUT:
        update_readme(doc)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
