"""Where the organs of synthesised MR training items land after normalisation, next to the real MR.

    python training/synthetic_vs_real_intensities.py --out training/reports/abdomen-synth-v5/synthetic_vs_real_mr.md

For ``--items`` MR items drawn exactly as training draws them (a :class:`SynthSampler` over the label
map of ``abdomen_ct_01``, the library's MR profile applied to each item as in training), the median
normalised value of the liver, the spleen and the kidneys per item, summarised per contrast; then the
same medians on each real MR of the project, normalised as inference does (the whole volume). A
network only meets at inference what its training items cover.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "training"))

from real_scans import REAL_SCANS, SHARED_DATA  # noqa: E402

from MultiModalSegLib.data.dataset import load_dataset  # noqa: E402
from MultiModalSegLib.data.synthesis import (  # noqa: E402
    DEFAULT_GAMMA,
    DEFAULT_GENERATOR,
    GENERATORS,
    SynthSampler,
    prepare_source,
    source_organ_ids,
)
from MultiModalSegLib.io import read_image  # noqa: E402
from MultiModalSegLib.labels import ABDOMEN_LABELS  # noqa: E402
from MultiModalSegLib.modalities import get_modality  # noqa: E402

SAMPLE_DATA = ROOT / "Resources" / "SampleData"
ORGANS = {"liver": (1,), "spleen": (2,), "kidneys": (3, 4)}


def organ_medians(image: np.ndarray, label: np.ndarray) -> dict[str, float | None]:
    """Median normalised value per organ (None where the organ is absent)."""
    out: dict[str, float | None] = {}
    for name, values in ORGANS.items():
        mask = np.isin(label, values)
        out[name] = float(np.median(image[mask])) if mask.any() else None
    return out


def _fmt(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def synthetic_rows(items: int, seed: int, spacing: float, patch: list[int], gamma: dict | None = None,
                   generator: int = DEFAULT_GENERATOR) -> list[str]:
    spec = load_dataset(ROOT / "Resources" / "SampleData" / "dataset.json")
    case = next(c for c in spec.cases("training") if c.name == "abdomen_ct_01")
    source = prepare_source(case, [spacing] * 3, [lab.value for lab in ABDOMEN_LABELS],
                            organ_ids=source_organ_ids(generator, ABDOMEN_LABELS))
    sampler = SynthSampler([source], "MR", patch, 1, [spacing] * 3, 0.7, seed=seed, stream=1, gamma=gamma, generator=generator)
    rng = np.random.default_rng([seed, 1])
    by_contrast: dict[str, dict[str, list[float]]] = {}
    for _ in range(items):
        index, center, item_seed = sampler.draw(rng)
        image, label, contrast = sampler.synthesize(index, center, item_seed)
        row = by_contrast.setdefault(contrast, {name: [] for name in ORGANS} | {"n": []})
        row["n"].append(1.0)
        for name, value in organ_medians(image, label).items():
            if value is not None:
                row[name].append(value)
    lines = []
    for contrast in sorted(by_contrast):
        row = by_contrast[contrast]
        lines.append(f"| synthesised, {contrast} | {len(row['n'])} | " + " | ".join(_fmt(row[n]) for n in ORGANS) + " |")
    return lines


def real_rows() -> list[str]:
    lines = []
    for scan in REAL_SCANS:
        if scan.modality != "MR":
            continue
        # the repository's copy (Resources/SampleData, with its attribution) when it ships one, else ../shared/data
        root = SAMPLE_DATA if scan.image(SAMPLE_DATA).exists() else SHARED_DATA
        volume = read_image(scan.image(root))
        medians = organ_medians(get_modality("MR").normalize(volume.array), scan.reference(volume, root))
        lines.append(f"| real, {scan.name} (whole volume) | 1 | " + " | ".join(
            "-" if medians[n] is None else f"{medians[n]:.2f}" for n in ORGANS) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=60, help="synthesised MR items (default: 60)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--spacing", type=float, default=3.0, help="mm (default: 3, the default model's)")
    parser.add_argument("--patch", type=int, nargs=3, default=[48, 64, 64], help="the default model's patch")
    parser.add_argument("--gamma-range", type=float, nargs=2, default=list(DEFAULT_GAMMA["range"]), metavar=("LOW", "HIGH"),
                        help="the random gamma of the synthesised MR, as a recipe's synthesis.gamma.MR.range (default: %(default)s)")
    parser.add_argument("--gamma-prob", type=float, default=DEFAULT_GAMMA["prob"],
                        help="how often that gamma is applied (default: %(default)s)")
    parser.add_argument("--generator", type=int, choices=GENERATORS, default=DEFAULT_GENERATOR,
                        help="the synthesiser, as a recipe's synthesis.generator (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=None, help="write the table here too")
    args = parser.parse_args(argv)
    gamma = {"range": tuple(args.gamma_range), "prob": args.gamma_prob}
    profile = get_modality("MR")
    header = [
        f"MR profile: {profile.description} Medians of each organ's normalised values per item; per contrast "
        f"the median over items (min-max). Synthesised MR gamma: {gamma['range'][0]:g}-{gamma['range'][1]:g} with "
        f"probability {gamma['prob']:g}; generator {args.generator}. Regenerate: `python training/synthetic_vs_real_intensities.py "
        f"--items {args.items} --seed {args.seed} --gamma-range {gamma['range'][0]:g} {gamma['range'][1]:g} "
        f"--gamma-prob {gamma['prob']:g} --generator {args.generator}`.",
        "",
        "| images | items | liver | spleen | kidneys |",
        "|---|---:|---:|---:|---:|",
    ]
    text = "\n".join([*header, *synthetic_rows(args.items, args.seed, args.spacing, args.patch, gamma, args.generator), *real_rows()]) + "\n"
    print(text, end="")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
