"""Where each organ lies among the others: a coarse spatial prior for choosing between pieces of one organ.

A network can call a structure outside the abdomen an organ with as much confidence as the organ itself: the
soft tissue around a shoulder, the heart (``training/reports/false-pieces/``). Keeping each organ's largest
piece then keeps the false one whenever it grows larger than the true one (a spleen of Dice 0 at a voxel size a
tenth finer). The organs' places relative to one another vary between patients by a few centimetres; those
false pieces lie ten centimetres and more from where the organ sits.

An organ's *place* is the centre of its voxels minus the centre of the other organs' voxels, in millimetres in
patient (LPS) coordinates, so that it does not depend on the grid, the field of view's origin or the scan's
orientation. :data:`ABDOMEN_LAYOUT` holds each abdominal organ's place in one real reference map, the training
CT ``abdomen_ct_01`` (``Resources/SampleData``; :func:`layout_of` computes it, and a test recomputes it from
that map). :class:`Placement` applies it to one segmentation: among an organ's pieces of at least
``RIVAL_SHARE`` of its largest, the largest is dropped for another only where the largest lies at least
:data:`LAYOUT_MARGIN_MM` farther from the organ's place than the other does.

The margin is a choice: larger than the differences between patients' layouts (the two real training maps
differ by 12 to 54 mm per organ), smaller than the distances of the false pieces measured on the validation CT
(110 to 130 mm farther than the true piece). On the validation CT it also leaves alone a left kidney whose true
piece lies 14 mm farther from the prior than a false piece on the spleen (``training/reports/out-of-place-pieces/``).
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
from scipy import ndimage

from ..io import Volume
from ..labels import LabelInfo

LAYOUT_MARGIN_MM = 50.0

# Each organ's centre minus the centre of the other three organs' voxels (mm, LPS), in the reference map of
# Resources/SampleData/abdomen_ct_01 (the training CT) remapped to the abdomen labels: layout_of() of that map.
ABDOMEN_LAYOUT: dict[str, tuple[float, float, float]] = {
    "liver": (-111.9, -58.9, 22.3),
    "spleen": (166.2, 49.9, 11.9),
    "kidney_right": (-46.8, 37.1, -43.9),
    "kidney_left": (115.4, 42.8, -29.7),
}


def layout_for(label_info: list[LabelInfo]) -> dict[str, tuple[float, float, float]] | None:
    """The reference layout of a model's organs: :data:`ABDOMEN_LAYOUT` where the model's labels are exactly its
    organs (each place is taken among all four), else ``None`` (no layout is known; the largest piece is kept)."""
    names = [lab.name for lab in label_info]
    if len(names) == len(ABDOMEN_LAYOUT) and set(names) == set(ABDOMEN_LAYOUT):
        return dict(ABDOMEN_LAYOUT)
    return None


def physical_points(index_zyx: np.ndarray, grid: Volume) -> np.ndarray:
    """Array indices ``[..., (z, y, x)]`` (fractional allowed) as LPS points ``[..., 3]`` (mm) on ``grid``."""
    direction = np.asarray(grid.direction, dtype=float).reshape(3, 3)
    xyz = np.asarray(index_zyx, dtype=float)[..., ::-1] * np.asarray(grid.spacing, dtype=float)
    return xyz @ direction.T + np.asarray(grid.origin, dtype=float)


def organ_centres(labels: np.ndarray, values: list[int], grid: Volume) -> dict[int, tuple[int, np.ndarray]]:
    """Per value present in ``labels``: its voxel count and the centre of its voxels (LPS mm) on ``grid``."""
    counts = np.bincount(labels.ravel(), minlength=max(values, default=0) + 1)
    present = [v for v in values if counts[v]]
    centres = ndimage.center_of_mass(np.ones(labels.shape, dtype=np.uint8), labels, present) if present else []
    return {v: (int(counts[v]), physical_points(np.asarray(c), grid)) for v, c in zip(present, centres, strict=True)}


def places(centres: dict[int, tuple[int, np.ndarray]]) -> dict[int, np.ndarray]:
    """Each value's centre minus the voxel-weighted centre of the other values' voxels (values with others)."""
    out = {}
    for value, (_, centre) in centres.items():
        others = [(n, c) for v, (n, c) in centres.items() if v != value]
        if others:
            weights = np.array([n for n, _ in others], dtype=float)
            out[value] = centre - (weights[:, None] * np.array([c for _, c in others])).sum(0) / weights.sum()
    return out


def layout_of(labels: Volume, label_info: list[LabelInfo]) -> dict[str, tuple[float, float, float]]:
    """The place of each organ of ``label_info`` found in the label map ``labels`` (mm, LPS, to 0.1 mm)."""
    values = [lab.value for lab in label_info]
    found = places(organ_centres(np.asarray(labels.array), values, labels))
    return {lab.name: tuple(round(float(x), 1) for x in found[lab.value]) for lab in label_info if lab.value in found}


class Placement:
    """The reference layout applied to one label map on ``grid``: :meth:`choose` picks the piece to keep.

    The organs' centres are measured on the first choice between pieces, not before: most label maps have one
    piece per organ and never need them. ``others``: per value, the voxel-weighted centre of the other organs'
    voxels in the map, every piece counted (the map as given, so that the choice does not depend on the order
    in which organs lose pieces; the caller must not change ``labels`` before choosing).
    """

    def __init__(self, labels: np.ndarray, grid: Volume, label_info: list[LabelInfo],
                 layout: dict[str, tuple[float, float, float]]) -> None:
        self.labels, self.grid, self.label_info = labels, grid, label_info
        self.expected = {lab.value: np.asarray(layout[lab.name], dtype=float) for lab in label_info if lab.name in layout}

    @cached_property
    def others(self) -> dict[int, np.ndarray]:
        centres = organ_centres(self.labels, [lab.value for lab in self.label_info], self.grid)
        return {v: centres[v][1] - place for v, place in places(centres).items()}

    def choose(self, value: int, pieces: np.ndarray, candidates: list[int], largest: int, offset: tuple[int, ...]) -> int:
        """The piece to keep among ``candidates`` (ids of the organ's components in ``pieces``, its labelled
        bounding box, whose first voxel is at index ``offset`` of the map): ``largest`` unless another candidate
        lies at least :data:`LAYOUT_MARGIN_MM` nearer the organ's place among the others."""
        if len(candidates) < 2 or value not in self.expected or value not in self.others:
            return largest
        centres = np.asarray(ndimage.center_of_mass(pieces > 0, pieces, candidates)) + np.asarray(offset, dtype=float)
        distance = np.linalg.norm(physical_points(centres, self.grid) - self.others[value] - self.expected[value], axis=-1)
        best = int(np.argmin(distance))
        if distance[candidates.index(largest)] - distance[best] >= LAYOUT_MARGIN_MM:
            return candidates[best]
        return largest
