"""A grid of synthesised training patches (CT and MR-like) from the training scans' label maps.

    python training/synthesis_grid.py --out training/reports/abdomen-synth/synthesised_samples.png
    python training/synthesis_grid.py --ct-arterial-share 0.35 --columns 10 --out training/reports/abdomen-synth-v4/synthesised_samples.png
    python training/synthesis_grid.py --ct-arterial-share 0.35 --columns 10 --out training/reports/abdomen-synth-v5/synthesised_samples.png
    python training/synthesis_grid.py --recipe training/configs/abdomen_synth_v6.json --columns 10 --out training/reports/abdomen-synth-v6/synthesised_samples.png
    python training/synthesis_grid.py --recipe training/configs/abdomen_synth_v16.json --columns 10 --out training/reports/abdomen-synth-v16/synthesised_samples.png
    python training/synthesis_grid.py --recipe training/configs/abdomen_synth_v19.json --columns 10 --out training/reports/abdomen-synth-v19/synthesised_samples.png
    python training/synthesis_grid.py --recipe training/configs/abdomen_synth_v32.json --texture-pairs --columns 8 --out training/reports/abdomen-synth-v32/texture_pairs.png

Each column is one item of a :class:`~MultiModalSegLib.data.synthesis.SynthSampler` (the middle
slice of its patch along z, with the model's labels outlined), drawn exactly as training draws it:
with ``--recipe``, under that recipe's synthesis settings, intensity profiles, profile jitter (an
item's title then gives its jitter fraction ``t`` when it has one) and polarity (``negated`` in the
title of an item shown as its negative). ``--texture-pairs``: two MR rows of the same items, painted
above and with the real CT's texture below (a recipe's ``textured`` kind), each image at its own
display range (0 to its 99.5th percentile), so that what the texture changes is visible.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from MultiModalSegLib.data.dataset import load_dataset  # noqa: E402
from MultiModalSegLib.data.polarity import negated  # noqa: E402
from MultiModalSegLib.data.profile_jitter import jitter_fraction  # noqa: E402
from MultiModalSegLib.data.synthesis import (  # noqa: E402
    SynthSampler,
    prepare_source,
    recipe_generator,
    recipe_options,
    source_organ_ids,
)
from MultiModalSegLib.labels import ABDOMEN_LABELS  # noqa: E402
from MultiModalSegLib.modalities import get_modality  # noqa: E402
from MultiModalSegLib.training.config import (  # noqa: E402
    configured_profiles,
    load_config,
    polarity_shares,
    profile_jitter_shares,
)
from MultiModalSegLib.visualization import display_colours  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
COLOURS = {value: tuple(c / 255 for c in rgb) for value, rgb in display_colours(ABDOMEN_LABELS).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=str(ROOT / "Resources/SampleData/dataset.json"))
    parser.add_argument("--case", default="abdomen_ct_01", help="the source case (default: abdomen_ct_01)")
    parser.add_argument("--out", default=str(ROOT / "training/reports/abdomen-synth/synthesised_samples.png"))
    parser.add_argument("--columns", type=int, default=8)
    parser.add_argument("--spacing", type=float, default=3.0)
    parser.add_argument("--patch", type=int, nargs=3, default=[48, 96, 96])
    parser.add_argument("--ct-arterial-share", type=float, default=0.0,
                        help="share of arterial-phase CT images, as a recipe's synthesis block sets it (default: 0)")
    parser.add_argument("--recipe", type=Path, default=None,
                        help="draw with this training config's synthesis settings (arterial share, MR random share, scale, gamma), "
                             "intensity profiles and profile jitter")
    parser.add_argument("--texture-pairs", action="store_true",
                        help="two MR rows of the same items: painted, then with the real CT's texture")
    args = parser.parse_args()
    recipe = load_config(args.recipe) if args.recipe else None
    synthesis = recipe.synthesis if recipe else {}
    profiles = configured_profiles(recipe) if recipe else {m: get_modality(m) for m in ("CT", "MR")}
    jitter = profile_jitter_shares(recipe) if recipe else {}
    polarity = polarity_shares(recipe) if recipe else {}
    synthesis = {"ct_arterial_share": args.ct_arterial_share, **synthesis}  # the recipe's share wins
    spec = load_dataset(args.dataset)
    case = next(c for c in spec.cases("training") if c.name == args.case)
    source = prepare_source(case, [args.spacing] * 3, [lab.value for lab in ABDOMEN_LABELS],
                            organ_ids=source_organ_ids(recipe_generator(synthesis), ABDOMEN_LABELS))
    fig, axes = plt.subplots(2, args.columns, figsize=(2.2 * args.columns, 5.4))
    rows = [("MR", 1, False), ("MR", 1, True)] if args.texture_pairs else [("CT", 0, None), ("MR", 1, None)]
    for row, (modality, stream, texture) in enumerate(rows):
        sampler = SynthSampler([source], modality, args.patch, args.columns, [args.spacing] * 3, 1.0, seed=7, stream=stream,
                               profile=profiles[modality], jitter=jitter.get(modality, 0.0), polarity=polarity.get(modality, 0.0),
                               texture=bool(texture), **recipe_options(synthesis, modality))
        rng = np.random.default_rng([7, stream])
        for col in range(args.columns):
            index, center, seed = sampler.draw(rng)
            image, label, contrast = sampler.synthesize(index, center, seed)
            if negated(seed, sampler.polarity):  # as the sampler's items show it
                image, contrast = 1.0 - image, contrast + ", negated"
            z = image.shape[0] // 2
            ax = axes[row, col]
            top = float(np.percentile(image[z], 99.5)) if args.texture_pairs else 1.0
            ax.imshow(image[z], cmap="gray", vmin=0, vmax=max(top, 1e-3))
            for value, colour in COLOURS.items():
                if (label[z] == value).any():
                    ax.contour(label[z] == value, levels=[0.5], colors=[colour], linewidths=0.6)
            t = jitter_fraction(seed, sampler.jitter)
            shown = {None: "", False: ", painted", True: ", textured"}[texture]
            ax.set_title(contrast + shown + (f"\nt = {t:.2f}" if t else ""), fontsize=8)
            ax.axis("off")
    fig.suptitle(f"Synthesised training patches from the label map of {args.case} (middle axial slice, labels outlined)", fontsize=9)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    print(args.out)


if __name__ == "__main__":
    main()
