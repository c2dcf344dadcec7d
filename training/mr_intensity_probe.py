"""How a model's MR segmentation of a real scan changes when its normalised input is remapped.

    python training/mr_intensity_probe.py --bundle training/runs-in-progress/abdomen-ummkd-synth-7/bundle \
        --bundle Resources/Models/abdomen-ummkd-synth-3.0.0.zip --out training/reports/abdomen-synth-v7/mr_intensity_probe.md

For each real MR of the project and each bundle, the Dice of the ordinary ``Segmenter`` (normal
quality) when the bundle's own MR profile is followed by one of :data:`REMAPS` before the network:
the other foreground choice of the percentile profile (and bounds halfway to it), a gamma, the negative image, and the mean of
the probabilities of the image and of its negative. It tells whether a model that misses an organ
on a real MR would find it in another rendering of the same anatomy (an intensity gap between the
training images and the scan) or not at all (a gap of shape, texture or context). A diagnosis on the
scans at hand, not a recipe: none of these remaps is part of any model.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from MultiModalSegLib.atomic import write_text_atomic  # noqa: E402
from MultiModalSegLib.data.profile_jitter import normalize_blended, other_foreground  # noqa: E402
from MultiModalSegLib.labels import ABDOMEN_LABELS  # noqa: E402
from MultiModalSegLib.metrics import dice_scores  # noqa: E402
from MultiModalSegLib.modalities import ModalityProfile  # noqa: E402
from training.real_scans import REAL_SCANS, SHARED_DATA  # noqa: E402

ORGANS = [lab.name for lab in ABDOMEN_LABELS]


class Remapped:
    """A profile whose normalised output is passed through ``remap`` (values stay in [0, 1])."""

    def __init__(self, profile: ModalityProfile, remap: Callable[[np.ndarray], np.ndarray]):
        self.profile, self.remap = profile, remap

    def normalize(self, array: np.ndarray) -> np.ndarray:
        return np.clip(self.remap(self.profile.normalize(array)), 0.0, 1.0).astype(np.float32)


class Blended:
    """A percentile profile whose bounds lie ``t`` of the way to its other foreground's (as a recipe's
    ``profile_jitter`` draws them in training, :func:`~MultiModalSegLib.data.profile_jitter.normalize_blended`)."""

    def __init__(self, profile: ModalityProfile, t: float):
        self.profile, self.t = profile, t

    def normalize(self, array: np.ndarray) -> np.ndarray:
        return normalize_blended(self.profile, array, self.t)


REMAPS: dict[str, Callable[[ModalityProfile], object]] = {
    "as trained": lambda p: p,
    "halfway to the other foreground": lambda p: Blended(p, 0.5),
    "other foreground": other_foreground,
    "gamma 2": lambda p: Remapped(p, lambda x: x**2),
    "gamma 3": lambda p: Remapped(p, lambda x: x**3),
    "negative": lambda p: Remapped(p, lambda x: 1.0 - x),
}
ENSEMBLE = ("as trained", "negative")  # probabilities averaged: a contrast-polarity ensemble


def largest_components(labels: np.ndarray) -> np.ndarray:
    from MultiModalSegLib.inference.segmenter import keep_largest_component

    return keep_largest_component(labels.astype(np.uint8), [lab.value for lab in ABDOMEN_LABELS])


def probe(segmenter, volume, reference: np.ndarray, organs: list[str]) -> dict[str, dict[str, float]]:
    """Remap name (and the ensemble) -> organ -> Dice on ``volume`` against ``reference``."""
    base = segmenter.profiles["MR"]
    out, probabilities = {}, {}
    try:
        for name, remap in REMAPS.items():
            segmenter.profiles["MR"] = remap(base)
            result = segmenter.segment(volume, "MR", probabilities=True)
            probabilities[name] = result.probabilities
            labels = largest_components(result.probabilities.argmax(0))
            out[name] = dice_scores(labels, reference, ABDOMEN_LABELS)
    finally:
        segmenter.profiles["MR"] = base
    mean = sum(probabilities[n] for n in ENSEMBLE) / len(ENSEMBLE)
    out[" + ".join(ENSEMBLE) + " (mean probabilities)"] = dice_scores(largest_components(mean.argmax(0)), reference, ABDOMEN_LABELS)
    return {name: {o: d for o, d in scores.items() if o in organs} for name, scores in out.items()}


def table(rows: list[tuple[str, str, str, dict[str, float]]]) -> list[str]:
    lines = ["| scan | model | input | " + " | ".join(ORGANS) + " | mean |", "|---|---|---|" + "---:|" * (len(ORGANS) + 1)]
    for scan, model, remap, scores in rows:
        cells = [f"{scores[o]:.3f}" if o in scores else "n/s" for o in ORGANS]
        lines.append(f"| {scan} | `{model}` | {remap} | " + " | ".join(cells) + f" | {np.mean(list(scores.values())):.3f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", action="append", required=True, help="a bundle (repeatable)")
    parser.add_argument("--out", type=Path, required=True, help="the markdown file to write")
    parser.add_argument("--data", type=Path, default=SHARED_DATA, help="the real scans' folder (default ../shared/data)")
    args = parser.parse_args(argv)

    from MultiModalSegLib.inference import Segmenter
    from MultiModalSegLib.io import read_image

    segmenters = [Segmenter(b, device="cpu", amp=False, largest_component=False) for b in args.bundle]
    rows = []
    for scan in (s for s in REAL_SCANS if s.modality == "MR"):
        volume = read_image(scan.image(args.data))
        reference = np.asarray(scan.reference(volume, args.data))
        for seg in segmenters:
            model = f"{seg.bundle.metadata['name']} {seg.bundle.metadata['version']}"
            rows += [(scan.name, model, remap, scores) for remap, scores in probe(seg, volume, reference, list(scan.organs)).items()]
    command = "python training/mr_intensity_probe.py " + " ".join(f"--bundle {b}" for b in args.bundle) + f" --out {args.out}"
    text = [
        "# Real MR under remapped intensities",
        "",
        "Dice against TotalSegmentator pseudo-labels (normal quality, largest component per organ) when each model's own MR",
        "profile is followed by the remap named in `input` (`other foreground`: the percentile profile over the other voxel",
        "choice, `all` <-> `above_mean`; `halfway`: bounds midway between the two; `gamma g`: x^g; `negative`: 1 - x). None",
        "of these remaps is part of a model (a recipe's profile jitter draws such bounds in training only); they",
        f"diagnose what a model misses. Regenerate: `{command}`.",
        "",
        *table(rows),
    ]
    write_text_atomic(args.out, "\n".join(text) + "\n")
    print("\n".join(text))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
