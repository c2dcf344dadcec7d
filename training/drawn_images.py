"""Images drawn from a real scan's label map on its own grid: its anatomy with a chosen appearance.

Each structure takes its tissue's value (:mod:`MultiModalSegLib.data.tissues`): an MR weighting's
signal (:func:`drawn_mr`) or the tissue's CT number in the portal-venous phase (:func:`drawn_ct`);
the voxels the map leaves unlabelled take the value of air, fat or soft tissue as their own intensity
says (CT: the synthesiser's HU bins; MR: below 5 % of the 99th percentile air, above half of it fat).
Then a blur of 0.7 voxel and noise (2 % of the MR scale, 10 HU), one seed. The scan's anatomy is
kept; only its appearance is chosen, so a model's result on such an image separates what it makes of
that anatomy from what it makes of the scan's intensities.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.real_scans import SHARED_DATA, RealScan, abdomen_labels

SIGNAL_SCALE = 500.0  # arbitrary MR units
CT_NOISE_HU = 10.0
MR_NOISE = 0.02


def tissue_ids(scan: RealScan, data: Path = SHARED_DATA):
    """The scan's volume, its structure ids with the unlabelled voxels given an unlabelled class
    (:data:`~MultiModalSegLib.data.tissues.UNLABELLED_BASE` on), and its label map."""
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
    return source, np.where(unlabelled, classes, structures), structures


def _draw(scan: RealScan, value_of, noise: float, data: Path, seed: int):
    """The scan's tissue ids mapped through ``value_of(tissue class)``, blurred and noised."""
    from scipy import ndimage

    from MultiModalSegLib.data.tissues import tissue_of
    from MultiModalSegLib.io import Volume

    source, ids, structures = tissue_ids(scan, data)
    table = np.zeros(int(ids.max()) + 1, np.float32)
    for i in np.unique(ids):
        table[i] = value_of(tissue_of(int(i)))
    rng = np.random.default_rng(seed)
    drawn = ndimage.gaussian_filter(table[ids], 0.7) + rng.normal(0.0, noise, ids.shape).astype(np.float32)
    return Volume(drawn, source.spacing, source.origin, source.direction), abdomen_labels(structures)


def drawn_mr(scan: RealScan, weighting: str, data: Path = SHARED_DATA, seed: int = 0):
    """An MR image of ``weighting`` (a key of ``MR_SIGNAL``) drawn from ``scan``'s label map on its
    own grid, and its reference labels."""
    from MultiModalSegLib.data.tissues import MR_SIGNAL
    from MultiModalSegLib.io import Volume

    signal = MR_SIGNAL[weighting]
    volume, reference = _draw(scan, lambda t: signal.get(t, signal["soft"]), MR_NOISE, data, seed)
    return Volume(np.clip(volume.array, 0.0, None) * SIGNAL_SCALE, volume.spacing, volume.origin, volume.direction), reference


def drawn_ct(scan: RealScan, data: Path = SHARED_DATA, seed: int = 0):
    """A portal-venous CT (native HU plus the phase's enhancement, ``CT_HU``) drawn from ``scan``'s
    label map on its own grid, and its reference labels."""
    from MultiModalSegLib.data.tissues import CT_HU

    def hu(tissue: str) -> float:
        mean, _spread, portal = CT_HU.get(tissue, CT_HU["soft"])
        return mean + portal

    return _draw(scan, hu, CT_NOISE_HU, data, seed)
