"""Where the organs of synthesised MR training items land after normalisation, next to the real MR.

    python training/synthetic_vs_real_intensities.py --out training/reports/abdomen-synth-v5/synthetic_vs_real_mr.md
    python training/synthetic_vs_real_intensities.py --recipe training/configs/abdomen_synth_v16.json --out training/reports/abdomen-synth-v16/synthetic_vs_real_mr.md

For ``--items`` MR items drawn exactly as training draws them (a :class:`SynthSampler` over the label
map of ``abdomen_ct_01``, the library's MR profile applied to each item as in training), the median
normalised value of the liver, the spleen and the kidneys per item, summarised per contrast; then the
same medians on each real MR of the project, normalised as inference does (the whole volume). A
network only meets at inference what its training items cover. With ``--recipe``, the items are drawn
under that recipe's MR synthesis settings, MR profile and profile jitter (the flags then stand aside);
a jittered recipe adds a row of its jittered items and the real MR under the other foreground choice.
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
from MultiModalSegLib.data.profile_jitter import jitter_fraction, other_foreground  # noqa: E402
from MultiModalSegLib.data.synthesis import (  # noqa: E402
    DEFAULT_GAMMA,
    DEFAULT_GENERATOR,
    GENERATORS,
    SynthSampler,
    prepare_source,
    recipe_options,
    source_organ_ids,
)
from MultiModalSegLib.io import read_image  # noqa: E402
from MultiModalSegLib.labels import ABDOMEN_LABELS  # noqa: E402
from MultiModalSegLib.modalities import ModalityProfile, get_modality  # noqa: E402
from MultiModalSegLib.training.config import configured_profiles, load_config, profile_jitter_shares  # noqa: E402

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


def synthetic_rows(items: int, seed: int, spacing: float, patch: list[int], options: dict | None = None) -> list[str]:
    """One row per contrast of ``items`` synthesised MR items (``options``: :class:`SynthSampler` keywords);
    with a profile jitter, one more row of the jittered items."""
    options = options or {}
    spec = load_dataset(ROOT / "Resources" / "SampleData" / "dataset.json")
    case = next(c for c in spec.cases("training") if c.name == "abdomen_ct_01")
    source = prepare_source(case, [spacing] * 3, [lab.value for lab in ABDOMEN_LABELS],
                            organ_ids=source_organ_ids(options.get("generator", DEFAULT_GENERATOR), ABDOMEN_LABELS))
    sampler = SynthSampler([source], "MR", patch, 1, [spacing] * 3, 0.7, seed=seed, stream=1, **options)
    rng = np.random.default_rng([seed, 1])
    rows: dict[str, dict[str, list[float]]] = {}
    for _ in range(items):
        index, center, item_seed = sampler.draw(rng)
        image, label, contrast = sampler.synthesize(index, center, item_seed)
        groups = [contrast] + (["jittered items (t > 0)"] if jitter_fraction(item_seed, sampler.jitter) else [])
        for group in groups:
            row = rows.setdefault(group, {name: [] for name in ORGANS} | {"n": []})
            row["n"].append(1.0)
            for name, value in organ_medians(image, label).items():
                if value is not None:
                    row[name].append(value)
    return [f"| synthesised, {group} | {len(rows[group]['n'])} | " + " | ".join(_fmt(rows[group][n]) for n in ORGANS) + " |"
            for group in sorted(rows)]


def real_rows(profile: ModalityProfile, jittered: bool = False) -> list[str]:
    """The organ medians of each real MR under ``profile`` (and under its other foreground when ``jittered``)."""
    profiles = [("whole volume", profile)] + ([("whole volume, other foreground", other_foreground(profile))] if jittered else [])
    lines = []
    for scan in REAL_SCANS:
        if scan.modality != "MR":
            continue
        # the repository's copy (Resources/SampleData, with its attribution) when it ships one, else ../shared/data
        root = SAMPLE_DATA if scan.image(SAMPLE_DATA).exists() else SHARED_DATA
        volume = read_image(scan.image(root))
        reference = scan.reference(volume, root)
        for words, used in profiles:
            medians = organ_medians(used.normalize(volume.array), reference)
            lines.append(f"| real, {scan.name} ({words}) | 1 | " + " | ".join(
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
    parser.add_argument("--recipe", type=Path, default=None,
                        help="draw under this training config's MR synthesis settings, MR profile and profile jitter")
    parser.add_argument("--out", type=Path, default=None, help="write the table here too")
    args = parser.parse_args(argv)
    if args.recipe:
        recipe = load_config(args.recipe)
        profile, jitter = configured_profiles(recipe)["MR"], profile_jitter_shares(recipe)["MR"]
        options = {k: v for k, v in recipe_options(recipe.synthesis, "MR").items() if v is not None}
        options.update(profile=profile, jitter=jitter)
        settings = f"the settings of `{args.recipe.name}` (MR profile jitter share {jitter:g})"
        command = f"--items {args.items} --seed {args.seed} --recipe {args.recipe}"
    else:
        gamma = {"range": tuple(args.gamma_range), "prob": args.gamma_prob}
        profile, jitter = get_modality("MR"), 0.0
        options = {"gamma": gamma, "generator": args.generator}
        settings = (f"gamma {gamma['range'][0]:g}-{gamma['range'][1]:g} with probability {gamma['prob']:g}; "
                    f"generator {args.generator}")
        command = (f"--items {args.items} --seed {args.seed} --gamma-range {gamma['range'][0]:g} {gamma['range'][1]:g} "
                   f"--gamma-prob {gamma['prob']:g} --generator {args.generator}")
    header = [
        f"MR profile: {profile.description} Medians of each organ's normalised values per item; per contrast "
        f"the median over items (min-max). Synthesised MR: {settings}. Regenerate: "
        f"`python training/synthetic_vs_real_intensities.py {command}`.",
        "",
        "| images | items | liver | spleen | kidneys |",
        "|---|---:|---:|---:|---:|",
    ]
    rows = [*synthetic_rows(args.items, args.seed, args.spacing, args.patch, options), *real_rows(profile, jitter > 0)]
    text = "\n".join([*header, *rows]) + "\n"
    print(text, end="")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
