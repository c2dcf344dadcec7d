"""Overlay pictures (``MultiModalSegLib.visualization``), checked on the rendered pixels: each kidney
in its own colour, reference contours in the contrasting colour, R / L markers on the correct sides,
the Dice per organ in the legend."""

from __future__ import annotations

import numpy as np
import pytest

from MultiModalSegLib.io import Volume
from MultiModalSegLib.labels import ABDOMEN_LABELS
from MultiModalSegLib.visualization import (
    FILL_ALPHA,
    MARKER_COLOUR,
    REFERENCE_COLOUR,
    display_colours,
    overlay_figure,
    render_overlay,
    save_overlay,
)

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
GREY_HU = 40.0  # the CT display window (-160, 240) shows it as grey 0.5


def _scene():
    """A uniform CT with a right kidney at low x (the patient's right in LPS) and a left kidney at high x."""
    shape = (20, 40, 60)  # z, y, x
    image = Volume(np.full(shape, GREY_HU, dtype=np.float32), (3.0, 3.0, 3.0), (0.0, 0.0, 0.0), IDENTITY)
    labels = np.zeros(shape, dtype=np.uint8)
    labels[5:15, 12:28, 8:20] = 3  # kidney_right
    labels[5:15, 12:28, 40:52] = 4  # kidney_left
    reference = labels.copy()
    reference[5:15, 14:30, 8:22] = 3  # the reference differs a little
    return image, Volume(labels, image.spacing, image.origin, IDENTITY), Volume(reference, image.spacing, image.origin, IDENTITY)


def _count(array: np.ndarray, colour, tolerance: float = 4.0) -> np.ndarray:
    return np.linalg.norm(array.astype(float) - np.asarray(colour, float), axis=-1) <= tolerance


def _blended(colour) -> np.ndarray:
    grey = 255 * (GREY_HU + 160) / 400
    return (1 - FILL_ALPHA) * grey + FILL_ALPHA * np.asarray(colour, float)


def test_kidneys_have_distinct_colours_even_when_their_labels_share_one():
    assert ABDOMEN_LABELS[2].color == ABDOMEN_LABELS[3].color  # the terminology's kidney colour, twice
    colours = display_colours(ABDOMEN_LABELS)
    assert colours[1] == ABDOMEN_LABELS[0].color and colours[2] == ABDOMEN_LABELS[1].color  # own colours where distinct
    values = list(colours.values())  # every pair of fills (the kidneys too) far apart, and far from the contours
    assert all(np.linalg.norm(np.subtract(a, b)) >= 80 for i, a in enumerate(values) for b in values[i + 1:])
    assert all(np.linalg.norm(np.subtract(a, REFERENCE_COLOUR)) >= 80 for a in values)


def test_rendered_overlay_pixels():
    image, labels, reference = _scene()
    array = render_overlay(image, labels, ABDOMEN_LABELS, "CT", reference=reference, dice={"kidney_right": 0.81})
    assert array.dtype == np.uint8 and array.ndim == 3 and array.shape[2] == 3
    colours = display_colours(ABDOMEN_LABELS)
    right, left = _count(array, _blended(colours[3])), _count(array, _blended(colours[4]))
    assert right.sum() > 100 and left.sum() > 100  # both kidneys filled, each in its own colour
    half = array.shape[1] / 2  # the axial view is the left half of the figure
    assert np.argwhere(right)[:, 1][np.argwhere(right)[:, 1] < half].mean() < np.argwhere(left)[:, 1][np.argwhere(left)[:, 1] < half].mean()
    assert _count(array, REFERENCE_COLOUR, 40).sum() > 50  # the reference contours
    markers = np.argwhere(_count(array, MARKER_COLOUR, 40))
    axial = markers[markers[:, 1] < half]
    right_kidney_x = np.argwhere(right)[:, 1].min()
    left_kidney_x = np.argwhere(left)[:, 1][np.argwhere(left)[:, 1] < half].max()
    assert (axial[:, 1] < right_kidney_x).sum() > 20 and (axial[:, 1] > left_kidney_x).sum() > 20  # R left, L right
    assert len(markers) > len(axial) > 0  # and on the coronal view too


def test_markers_and_dice_are_on_the_figure():
    image, labels, reference = _scene()
    fig = overlay_figure(image, labels, ABDOMEN_LABELS, "CT", reference=reference, dice={"liver": float("nan"), "kidney_right": 0.81})
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert texts.count("R") == 2 and texts.count("L") == 2
    legend = [t.get_text() for t in fig.legends[0].texts]
    assert "kidney_right (Dice 0.81)" in legend and "liver" in legend and "reference" in legend


@pytest.mark.parametrize("with_reference", [True, False])
def test_save_overlay_writes_the_rendered_png(tmp_path, with_reference):
    import matplotlib.pyplot as plt

    image, labels, reference = _scene()
    path = save_overlay(image, labels, ABDOMEN_LABELS, "CT", tmp_path / "o.png", reference=reference if with_reference else None)
    saved = (plt.imread(path)[..., :3] * 255).round().astype(np.uint8)
    assert saved.shape == render_overlay(image, labels, ABDOMEN_LABELS, "CT", reference=reference if with_reference else None).shape
    assert bool(_count(saved, REFERENCE_COLOUR, 40).sum() > 50) is with_reference
