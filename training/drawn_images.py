"""Images drawn from a real scan's label map on its own grid: its anatomy with a chosen appearance.

Each structure takes its tissue's value (:mod:`MultiModalSegLib.data.tissues`): an MR weighting's
signal (:func:`drawn_mr`) or the tissue's CT number in the portal-venous phase (:func:`drawn_ct`);
the voxels the map leaves unlabelled take the value of air, fat or soft tissue as their own intensity
says (CT: the synthesiser's HU bins; MR: below 5 % of the 99th percentile air, above half of it fat).
Then a blur of 0.7 voxel and noise (2 % of the MR scale, 10 HU), one seed. The scan's anatomy is
kept; only its appearance is chosen, so a model's result on such an image separates what it makes of
that anatomy from what it makes of the scan's intensities.

:func:`scan_anatomy` reads a scan and its label map once; each drawing takes that reading, so one
scan drawn in several appearances is read once.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from training.real_scans import SHARED_DATA, RealScan, abdomen_labels

if TYPE_CHECKING:
    from MultiModalSegLib.io import Volume

SIGNAL_SCALE = 500.0  # arbitrary MR units
CT_NOISE_HU = 10.0
MR_NOISE = 0.02


class Anatomy(NamedTuple):
    """A real scan read once: its volume (grid and intensities), its tissue ids (structure ids, the
    unlabelled voxels given an unlabelled class from :data:`~MultiModalSegLib.data.tissues.UNLABELLED_BASE`
    on) and its structure label map."""

    source: Volume
    ids: np.ndarray
    structures: np.ndarray


def scan_anatomy(scan: RealScan, data: Path = SHARED_DATA) -> Anatomy:
    """Reads ``scan`` and its label map and sorts its unlabelled voxels into air, fat and soft tissue."""
    from MultiModalSegLib.data.tissues import UNLABELLED_BASE, UNLABELLED_CLASSES, intensity_classes
    from MultiModalSegLib.io import read_image

    source = read_image(scan.image(data))
    structures = scan.structures(source, data).astype(np.int32)
    image = np.asarray(source.array, dtype=np.float32)
    unlabelled = structures == 0
    if scan.modality == "CT":
        classes = intensity_classes(image, unlabelled, "CT").astype(np.int32)
    else:
        top = float(np.percentile(image, 99))
        kind = np.where(image < 0.05 * top, "air", np.where(image > 0.5 * top, "fat", "soft"))
        classes = np.zeros(image.shape, np.int32)
        for i, name in enumerate(UNLABELLED_CLASSES):
            classes[kind == name] = UNLABELLED_BASE + i
        classes[~unlabelled] = 0
    return Anatomy(source, np.where(unlabelled, classes, structures), structures)


def _draw(anatomy: Anatomy, value_of, noise: float, seed: int):
    """The anatomy's tissue ids mapped through ``value_of(tissue class)``, blurred and noised."""
    from scipy import ndimage

    from MultiModalSegLib.data.tissues import tissue_of
    from MultiModalSegLib.io import Volume

    source, ids, structures = anatomy
    table = np.zeros(int(ids.max()) + 1, np.float32)
    for i in np.unique(ids):
        table[i] = value_of(tissue_of(int(i)))
    rng = np.random.default_rng(seed)
    drawn = ndimage.gaussian_filter(table[ids], 0.7) + rng.normal(0.0, noise, ids.shape).astype(np.float32)
    return Volume(drawn, source.spacing, source.origin, source.direction), abdomen_labels(structures)


def drawn_mr(anatomy: Anatomy, weighting: str, seed: int = 0):
    """An MR image of ``weighting`` (a key of ``MR_SIGNAL``) drawn from a scan's anatomy
    (:func:`scan_anatomy`) on its own grid, and its reference labels."""
    from MultiModalSegLib.data.tissues import MR_SIGNAL
    from MultiModalSegLib.io import Volume

    signal = MR_SIGNAL[weighting]
    volume, reference = _draw(anatomy, lambda t: signal.get(t, signal["soft"]), MR_NOISE, seed)
    return Volume(np.clip(volume.array, 0.0, None) * SIGNAL_SCALE, volume.spacing, volume.origin, volume.direction), reference


def drawn_ct(anatomy: Anatomy, seed: int = 0):
    """A portal-venous CT (native HU plus the phase's enhancement, ``CT_HU``) drawn from a scan's
    anatomy (:func:`scan_anatomy`) on its own grid, and its reference labels."""
    from MultiModalSegLib.data.tissues import CT_HU

    def hu(tissue: str) -> float:
        mean, _spread, portal = CT_HU.get(tissue, CT_HU["soft"])
        return mean + portal

    return _draw(anatomy, hu, CT_NOISE_HU, seed)
