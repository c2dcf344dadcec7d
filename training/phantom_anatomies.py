"""The same phantom patients under the first and the second anatomy, side by side.

    python training/phantom_anatomies.py --out training/reports/abdomen-synth-v14/phantom_anatomies.png

Each column is one CT phantom patient (the seeds a recipe with ``"seed": 0`` draws: ct_000, ct_001,
...); the rows are the axial slice through its spleen's largest section and through its liver's,
under ``anatomy`` 1 and 2, with the labels outlined (liver, spleen, right and left kidney). Shown as
stored, at the phantom's own grid; the window is a soft-tissue one (-160 to 240 HU).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from MultiModalSegLib.data.phantoms import generate_phantom, patient_seed  # noqa: E402
from MultiModalSegLib.labels import ABDOMEN_LABELS  # noqa: E402
from MultiModalSegLib.visualization import display_colours  # noqa: E402

ROWS = ((1, 2), (2, 2), (1, 1), (2, 1))  # (anatomy, organ whose largest axial section is shown)


def largest_section(label: np.ndarray, value: int) -> int:
    return int(np.argmax((label == value).sum(axis=(1, 2))))


def draw(out: Path, columns: int, seed: int = 0, thorax: bool = True) -> Path:
    """Write the figure for the first ``columns`` CT patients of a phantom data set of ``seed``."""
    names = {lab.value: lab.name for lab in ABDOMEN_LABELS}
    colours = {value: tuple(c / 255 for c in rgb) for value, rgb in display_colours(ABDOMEN_LABELS).items()}
    fig, axes = plt.subplots(len(ROWS), columns, figsize=(2.6 * columns, 2.7 * len(ROWS)), squeeze=False)
    for col in range(columns):
        drawn = {a: generate_phantom("CT", patient_seed(seed, "CT", col), thorax=thorax, anatomy=a) for a in (1, 2)}
        for row, (anatomy, organ) in enumerate(ROWS):
            image, label = (np.asarray(v.array) for v in drawn[anatomy])
            z = largest_section(label, organ)
            ax = axes[row, col]
            ax.imshow(np.clip(image[z], -160, 240), cmap="gray")
            for value, colour in colours.items():
                if (label[z] == value).any():
                    ax.contour(label[z] == value, levels=[0.5], colors=[colour], linewidths=0.8)
            ax.set_title(f"ct_{col:03d}, anatomy {anatomy}\n{names[organ]} section", fontsize=8)
            ax.axis("off")
    fig.suptitle("CT phantoms, first and second anatomy (same patients; outlines: liver, spleen, kidneys)", fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=70)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="PNG file to write")
    parser.add_argument("--columns", type=int, default=6, help="number of patients (default 6)")
    parser.add_argument("--seed", type=int, default=0, help="the phantom data set's seed (default 0)")
    parser.add_argument("--no-thorax", action="store_true", help="draw the phantoms without the thorax")
    args = parser.parse_args(argv)
    print(draw(args.out, args.columns, args.seed, thorax=not args.no_thorax))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
