"""Overlay pictures of a segmentation on its image (PNG, matplotlib without a display)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .io import Volume
from .labels import LabelInfo
from .preprocessing import reorient

DISPLAY_WINDOWS = {"CT": (-160.0, 240.0)}  # HU window; other modalities use percentiles


def _window(array: np.ndarray, modality: str) -> np.ndarray:
    low, high = DISPLAY_WINDOWS.get(modality, tuple(np.percentile(array, [1, 99.5])))
    return np.clip((array - low) / max(high - low, 1e-6), 0, 1)


def _colour_overlay(labels: np.ndarray, info: Sequence[LabelInfo]) -> np.ndarray:
    rgba = np.zeros((*labels.shape, 4), dtype=np.float32)
    for lab in info:
        rgba[labels == lab.value] = (*(c / 255 for c in lab.color), 0.45)
    return rgba


def save_overlay(
    image: Volume,
    labels: Volume,
    info: Sequence[LabelInfo],
    modality: str,
    path: str | Path,
    reference: Volume | None = None,
) -> Path:
    """Axial and coronal slices through the segmented organs, in radiological display (patient's
    left on the right of the screen). The reference label map, when given, is drawn as contours."""
    import matplotlib

    matplotlib.use("Agg")
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
    fig, axes = plt.subplots(1, 2, figsize=(10, 5))
    shown = _window(img.array.astype(np.float32), modality)
    for ax, (title, take, aspect) in zip(axes, views, strict=True):
        ax.imshow(take(shown), cmap="gray", aspect=aspect, interpolation="nearest")
        ax.imshow(take(_colour_overlay(lab.array, info)), aspect=aspect, interpolation="nearest")
        if ref is not None:
            for item in info:
                mask = take(ref.array == item.value)
                if mask.any():
                    ax.contour(mask, levels=[0.5], colors=[tuple(c / 255 for c in item.color)], linewidths=0.8)
        ax.set_title(f"{modality} {title}")
        ax.axis("off")
    handles = [plt.Rectangle((0, 0), 1, 1, color=tuple(c / 255 for c in lab_.color)) for lab_ in info]
    fig.legend(handles, [lab_.name for lab_ in info], loc="lower center", ncol=len(info), frameon=False)
    if ref is not None:
        fig.suptitle("filled: model output; contours: reference labels")
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return path
