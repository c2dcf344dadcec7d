"""Overlay pictures of a segmentation on its image (PNG, matplotlib without a display).

Each organ is filled in its own colour: a label whose colour an earlier label already has (the
terminology gives both kidneys one colour) gets the first colour of :data:`DISTINCT_COLOURS` far
from every colour in use. Reference labels are drawn as contours in one contrasting colour
(:data:`REFERENCE_COLOUR`), the patient's right and left are marked (radiological display: the
patient's left on the right of the screen), and the Dice of each organ, when given, is in the legend.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .io import Volume
from .labels import LabelInfo
from .preprocessing import reorient

DISPLAY_WINDOWS = {"CT": (-160.0, 240.0)}  # HU window; other modalities use percentiles
FILL_ALPHA = 0.45
REFERENCE_COLOUR = (0, 255, 255)  # cyan: far from the organs' warm colours and from grey
MARKER_COLOUR = (255, 255, 0)  # the R / L side markers
DISTINCT_COLOURS = ((60, 180, 75), (255, 160, 40), (70, 120, 240), (240, 50, 230), (170, 110, 40), (128, 128, 255))
_MIN_COLOUR_DISTANCE = 80.0  # RGB distance below which two fills are hard to tell apart


def _window(array: np.ndarray, modality: str) -> np.ndarray:
    low, high = DISPLAY_WINDOWS.get(modality, tuple(np.percentile(array, [1, 99.5])))
    return np.clip((array - low) / max(high - low, 1e-6), 0, 1)


def display_colours(info: Sequence[LabelInfo]) -> dict[int, tuple[int, int, int]]:
    """Label value -> fill colour: the label's own colour unless it is close to one already in use
    (or to the reference and marker colours), then the first distinct colour far from all of them."""
    used: list[tuple[int, int, int]] = [REFERENCE_COLOUR, MARKER_COLOUR]

    def far(colour: Sequence[int]) -> bool:
        return all(np.linalg.norm(np.subtract(colour, u)) >= _MIN_COLOUR_DISTANCE for u in used)

    out = {}
    for lab in info:
        colour = tuple(int(c) for c in lab.color)
        if not far(colour):
            colour = next((c for c in DISTINCT_COLOURS if far(c)), colour)
        out[lab.value] = colour
        used.append(colour)
    return out


def _colour_overlay(labels: np.ndarray, colours: Mapping[int, tuple[int, int, int]]) -> np.ndarray:
    rgba = np.zeros((*labels.shape, 4), dtype=np.float32)
    for value, colour in colours.items():
        rgba[labels == value] = (*(c / 255 for c in colour), FILL_ALPHA)
    return rgba


def overlay_figure(
    image: Volume,
    labels: Volume,
    info: Sequence[LabelInfo],
    modality: str,
    reference: Volume | None = None,
    dice: Mapping[str, float | None] | None = None,
):
    """The matplotlib figure of :func:`save_overlay` (axial and coronal slices through the organs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.patheffects as effects
    import matplotlib.pyplot as plt

    img, lab = reorient(image), reorient(labels)
    ref = reorient(reference) if reference is not None else None
    fg = np.argwhere(lab.array > 0)
    cz, cy, _ = (fg.mean(0) if len(fg) else np.array(img.array.shape) / 2).astype(int)
    sx, sy, sz = img.spacing
    views = [
        ("axial", lambda a: a[cz], sy / sx),
        ("coronal", lambda a: a[:, cy][::-1], sz / sx),
    ]
    colours = display_colours(info)
    rgb = {v: tuple(c / 255 for c in colour) for v, colour in colours.items()}
    fig, axes = plt.subplots(1, 2, figsize=(10, 5))
    shown = _window(img.array.astype(np.float32), modality)
    outline = [effects.withStroke(linewidth=2.5, foreground="black")]
    for ax, (title, take, aspect) in zip(axes, views, strict=True):
        ax.imshow(take(shown), cmap="gray", aspect=aspect, interpolation="nearest", vmin=0, vmax=1)
        ax.imshow(take(_colour_overlay(lab.array, colours)), aspect=aspect, interpolation="nearest")
        if ref is not None:
            for item in info:
                mask = take(ref.array == item.value)
                if mask.any():
                    ax.contour(mask, levels=[0.5], colors=[tuple(c / 255 for c in REFERENCE_COLOUR)], linewidths=1.0)
        # radiological display (LPS arrays, x increasing to the patient's left): right on the screen's left
        for x, side, align in ((0.03, "R", "left"), (0.97, "L", "right")):
            ax.text(x, 0.5, side, transform=ax.transAxes, ha=align, va="center", fontsize=16, fontweight="bold",
                    color=tuple(c / 255 for c in MARKER_COLOUR), path_effects=outline)  # fmt: skip
        ax.set_title(f"{modality} {title}")
        ax.axis("off")

    def name(item: LabelInfo) -> str:
        score = (dice or {}).get(item.name)
        return item.name if score is None or np.isnan(score) else f"{item.name} (Dice {score:.2f})"

    handles = [plt.Rectangle((0, 0), 1, 1, color=rgb[item.value]) for item in info]
    names = [name(item) for item in info]
    if ref is not None:
        handles.append(plt.Line2D([0], [0], color=tuple(c / 255 for c in REFERENCE_COLOUR), linewidth=2))
        names.append("reference")
    fig.legend(handles, names, loc="lower center", ncol=min(len(names), 3), frameon=False)
    if ref is not None:
        fig.suptitle("filled: model output; cyan contours: reference labels")
    fig.subplots_adjust(bottom=0.16)
    return fig


def render_overlay(*args, **kwargs) -> np.ndarray:
    """The overlay (arguments of :func:`overlay_figure`) as an RGB ``uint8`` array of the figure."""
    import matplotlib.pyplot as plt

    fig = overlay_figure(*args, **kwargs)
    fig.set_dpi(90)
    fig.canvas.draw()
    array = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return array


def save_overlay(
    image: Volume,
    labels: Volume,
    info: Sequence[LabelInfo],
    modality: str,
    path: str | Path,
    reference: Volume | None = None,
    dice: Mapping[str, float | None] | None = None,
) -> Path:
    """Write the overlay (see the module doc) as a PNG at ``path``, atomically."""
    import matplotlib.pyplot as plt

    array = render_overlay(image, labels, info, modality, reference=reference, dice=dice)
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        plt.imsave(tmp, array, format="png")
    return path
