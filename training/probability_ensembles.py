"""Would averaging finished models close the gap? Dice of every model alone and of every group of them
(pairs, triples, ... all of them together), on the real scans that none of them trained on.

    python training/probability_ensembles.py \
        --bundle 3.0.0=Resources/Models/abdomen-ummkd-synth-3.0.0.zip \
        --bundle v22=training/runs-in-progress/abdomen-ummkd-synth-22/bundle --out training/reports/ensembles

Each model segments each scan through the ordinary ``Segmenter`` (normal quality, with the inference
its bundle declares, the polarity ensemble included) and returns its class probabilities on the
scan's grid; a group's labels are the argmax of the mean of its members' probabilities, each organ's
largest piece kept, as the ``Segmenter`` keeps it. A model alone is scored the same way, so the rows
compare like with like (for a single model the figures equal ``training/evaluate_real_scans.py``'s up
to the organ borders it draws from resampled probabilities). Scans a member trained on are left out
for every group holding it. Writes ``ensembles.md`` and ``ensembles.json`` to ``--out``.

``--spacing-scale NAME=FACTOR`` runs the model named NAME at its bundle's voxel size times FACTOR (the
``spacing_scale`` of :class:`~MultiModalSegLib.inference.segmenter.Quality`). One bundle listed under
several names at several factors makes the groups a test-time average over voxel sizes:

    python training/probability_ensembles.py --bundle x1=M.zip --bundle x0.9=M.zip --spacing-scale x0.9=0.9 --out OUT
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from benchmarks.results_files import save_results  # noqa: E402
from MultiModalSegLib.labels import ABDOMEN_LABELS  # noqa: E402
from MultiModalSegLib.metrics import evaluate_labels  # noqa: E402
from training.averaged_segmenter import mean_labels  # noqa: E402
from training.evaluate_real_scans import trained_case_names  # noqa: E402
from training.real_scans import REAL_SCANS, SHARED_DATA  # noqa: E402


def named_bundle(text: str) -> tuple[str, Path]:
    """``name=path`` (or a path, named by its file or folder) from the command line."""
    name, sep, path = text.partition("=")
    return (name, Path(path)) if sep else (Path(text).stem, Path(text))


def named_scale(text: str) -> tuple[str, float]:
    """``name=factor`` from the command line: a positive voxel-size factor for the model named ``name``."""
    name, sep, factor = text.partition("=")
    try:
        value = float(factor) if sep and name else 0.0
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give NAME=FACTOR with a positive factor, e.g. x0.9=0.9")
    return name, value


def probabilities(bundles: dict[str, Path], scans: list, root: Path,
                  scales: dict[str, float] | None = None) -> tuple[dict, dict, dict]:
    """Per model and unseen scan, the class probabilities (float16) on the scan's grid; the scans'
    references; per model, its bundle's metadata (read once, sha256 checked). Each scan is read once.
    ``scales``: per model name, the factor on its bundle's voxel size (default 1, normal quality)."""
    from MultiModalSegLib.inference import Segmenter
    from MultiModalSegLib.inference.segmenter import Quality
    from MultiModalSegLib.io import read_image

    probs: dict[tuple[str, str], np.ndarray] = {}
    segmenters = {name: Segmenter(path, device="cpu", amp=False, quality=Quality(spacing_scale=(scales or {}).get(name, 1.0)))
                  for name, path in bundles.items()}
    metadata = {name: seg.bundle.metadata for name, seg in segmenters.items()}  # each bundle loaded once, sha256-checked
    trained = {name: trained_case_names(meta) for name, meta in metadata.items()}
    volumes = {s.name: read_image(s.image(root)) for s in scans if any(s.name not in t for t in trained.values())}
    references = {s.name: (s.reference(volumes[s.name], root), volumes[s.name]) for s in scans if s.name in volumes}
    for name, seg in segmenters.items():
        for scan in scans:
            if scan.name in volumes and scan.name not in trained[name]:
                probs[name, scan.name] = seg.segment(volumes[scan.name], scan.modality, probabilities=True).probabilities.astype(np.float16)
    return probs, references, metadata


def group_dice(members: tuple[str, ...], scan, probs: dict, references: dict) -> dict[str, float]:
    """Dice per scored organ of the argmax of the members' mean probabilities (one piece of each organ kept, as
    the ``Segmenter`` keeps it). ``references``: per scan, its reference labels and its image (the grid)."""
    reference, grid = references[scan.name]
    labels = mean_labels([probs[m, scan.name] for m in members], list(ABDOMEN_LABELS), grid)[0]
    metrics = evaluate_labels(labels, reference, ABDOMEN_LABELS, grid.spacing)
    return {o: round(float(metrics[o]["dice"]), 4) for o in scan.organs}


def groups(names: list[str], largest: int | None = None) -> list[tuple[str, ...]]:
    """Every model alone, then every group of two, of three, ... up to all of them (or up to ``largest``
    models), in the models' order.

    Each model's probabilities are computed once, so a group costs only its mean and its scoring."""
    top = len(names) if largest is None else min(largest, len(names))
    return [g for size in range(1, top + 1) for g in itertools.combinations(names, size)]


def voxel_size_spread(rows: list[dict], bundles: dict[str, Path], scales: dict[str, float]) -> list[dict]:
    """For each bundle listed at two or more voxel sizes: per unseen scan and organ, its Dice alone at
    each size (``rows``' single-model rows), their mean and the lowest. A model whose figure holds
    across sizes a tenth apart generalises over patients' organ sizes; a peak at one size does not."""
    alone = {r["models"][0]: r["dice"] for r in rows if len(r["models"]) == 1}
    by_path: dict[str, list[str]] = {}
    for name, path in bundles.items():
        by_path.setdefault(str(path), []).append(name)
    out = []
    for path, names in by_path.items():
        names = sorted(names, key=lambda n: scales.get(n, 1.0))
        if len({scales.get(n, 1.0) for n in names}) < 2 or not all(n in alone for n in names):
            continue
        dice = {}
        for scan in alone[names[0]]:
            organs = alone[names[0]][scan]
            dice[scan] = {o: {"by_scale": [alone[n][scan][o] for n in names],
                              "mean": round(float(np.mean([alone[n][scan][o] for n in names])), 4),
                              "lowest": min(alone[n][scan][o] for n in names)} for o in organs}
        out.append({"bundle": path, "names": names, "scales": [scales.get(n, 1.0) for n in names], "dice": dice})
    return out


def spread_markdown(spread: list[dict], scans: list) -> str:
    """One row per bundle: per organ its Dice at each voxel size (smallest factor first), then the mean."""
    cols = [(s.name, o) for s in scans for o in s.organs]
    head = ["bundle (names)", "voxel size factors"] + [f"{s} {o}" for s, o in cols] + [f"{s.name} mean" for s in scans]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for r in spread:
        cells = [" / ".join(f"{d:.3f}" for d in r["dice"][s][o]["by_scale"]) + f" ({r['dice'][s][o]['mean']:.3f})"
                 if s in r["dice"] else "-" for s, o in cols]
        means = [f"{np.mean([v['mean'] for v in r['dice'][s.name].values()]):.3f}" if s.name in r["dice"] else "-"
                 for s in scans]
        lines.append("| " + " | ".join([f"`{r['bundle']}` ({', '.join(r['names'])})",
                                         " / ".join(f"{f:g}" for f in r["scales"]), *cells, *means]) + " |")
    return "\n".join(lines)


def markdown(rows: list[dict], scans: list) -> str:
    head = ["models averaged"] + [f"{s.name} {o}" for s in scans for o in s.organs] + [f"{s.name} mean" for s in scans]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for r in rows:
        cells = [f"{r['dice'][s.name][o]:.3f}" if s.name in r["dice"] else "-" for s in scans for o in s.organs]
        means = [f"{np.mean(list(r['dice'][s.name].values())):.3f}" if s.name in r["dice"] else "-" for s in scans]
        lines.append("| " + " | ".join([" + ".join(r["models"]), *cells, *means]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Dice of finished models alone and averaged, on the unseen real scans.")
    parser.add_argument("--bundle", action="append", required=True, type=named_bundle, help="name=bundle path (repeatable)")
    parser.add_argument("--spacing-scale", action="append", default=[], type=named_scale, metavar="NAME=FACTOR",
                        help="run the model named NAME at its voxel size times FACTOR (repeatable; default 1)")
    parser.add_argument("--largest-group", type=int, default=None, metavar="K",
                        help="form groups of at most K models (default: every group; 1: each model alone)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=SHARED_DATA, help=f"the real scans' folder (default {SHARED_DATA})")
    args = parser.parse_args(argv)
    bundles = dict(args.bundle)
    if len(bundles) != len(args.bundle):
        parser.error("give each bundle its own name (name=path)")
    if args.largest_group is not None and args.largest_group < 1:
        parser.error("--largest-group must be 1 or more")
    scales = dict(args.spacing_scale)
    if set(scales) - set(bundles):
        parser.error(f"--spacing-scale names no --bundle: {sorted(set(scales) - set(bundles))}")
    scans = [s for s in REAL_SCANS if s.image(args.data).is_file()]
    probs, references, metadata = probabilities(bundles, scans, args.data, scales)
    trained = {name: trained_case_names(meta) for name, meta in metadata.items()}
    scans = [s for s in scans if s.name in references]
    rows = [{"models": list(g), "spacing_scales": [scales.get(m, 1.0) for m in g],
             "dice": {s.name: group_dice(g, s, probs, references) for s in scans if not any(s.name in trained[m] for m in g)}}
            for g in groups(list(bundles), args.largest_group)]
    text = (
        "# Finished models alone and averaged\n\n"
        "Dice against the TotalSegmentator pseudo-labels of the real scans that none of the averaged models "
        "trained on ('-': a member trained on it); normal quality, each model with the inference its bundle "
        "declares; a group's labels are the argmax of its members' mean class probabilities. Models: "
        + ", ".join(f"`{n}` = `{p}`" + (f" at {scales[n]} times its voxel size" if n in scales else "") for n, p in bundles.items())
        + ". Regenerate: `python training/probability_ensembles.py "
        + " ".join(f"--bundle {n}={p}" for n, p in bundles.items())
        + "".join(f" --spacing-scale {n}={f}" for n, f in scales.items())
        + (f" --largest-group {args.largest_group}" if args.largest_group else "")
        + f" --out {args.out}`.\n\n" + markdown(rows, scans) + "\n"
    )
    save_results(args.out, "ensembles", rows, text)
    print(text)
    spread = voxel_size_spread(rows, bundles, scales)
    if spread:
        for row in spread:  # named as the other checks' result files name a model, for training/scorecard.py
            meta = metadata[row["names"][0]]
            row["model"] = f"{meta['name']} {meta['version']}"
        spread_text = (
            "# Each bundle at several voxel sizes\n\n"
            "Dice of each bundle alone at each voxel size it was run at (its own voxel size times the factor, smallest "
            "factor first) and, in brackets, their mean, on the real scans it never trained on; from the single-model "
            "rows of `ensembles.md` (same run). A figure that holds across sizes a tenth apart holds across patients' "
            "organ sizes; one that peaks at the model's own size does not.\n\n" + spread_markdown(spread, scans) + "\n"
        )
        save_results(args.out, "voxel_sizes", spread, spread_text)
        print(spread_text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
