"""Bring a dataset case into model space: normalised intensities, canonical orientation, the
model's spacing, cropped to the body."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..io import read_image, read_labelmap
from ..modalities import ModalityProfile, get_modality
from ..preprocessing import crop, foreground_bbox, to_model_space
from .dataset import Case
from .profile_jitter import blended_normaliser, unit_alternate


@dataclass
class PreparedCase:
    """A case in model space: ``image`` float32 ``[z, y, x]``, ``label`` uint8 or ``None``."""

    name: str
    modality: str
    image: np.ndarray
    label: np.ndarray | None
    weight: float = 1.0
    # a percentile profile's other foreground bounds on this image's [0, 1] scale (:mod:`.profile_jitter`)
    alternate: tuple[float, float] | None = None
    # the image normalised at a normalisation ensemble's further fractions, in ``image``'s crop (validation)
    passes: tuple[np.ndarray, ...] = ()

    @property
    def foreground(self) -> np.ndarray:
        """Flat indices of labelled voxels (cached), for foreground-centred patch sampling."""
        if not hasattr(self, "_fg"):
            self._fg = np.flatnonzero(self.label) if self.label is not None else np.empty(0, dtype=np.int64)
        return self._fg

    @property
    def class_voxels(self) -> dict[int, np.ndarray]:
        """Flat indices of each present label value's voxels (cached), for class-balanced sampling."""
        if not hasattr(self, "_by_class"):
            fg = self.foreground
            values = self.label.ravel()[fg] if fg.size else np.empty(0, dtype=np.uint8)
            self._by_class = {int(v): fg[values == v] for v in np.unique(values)}
        return self._by_class


def remap_label_array(
    array: np.ndarray, remap: dict[int, int] | None, valid: Sequence[int], source: str, *, strict: bool = False
) -> np.ndarray:
    """Apply a label remap table, or check that the values are valid model labels.

    A user's remap table sends values it does not list to background; with ``strict`` (the remap
    only renumbers the dataset's label table) a value the table does not list is an error.
    """
    if remap is not None and strict:
        stray = sorted(set(np.unique(array).tolist()) - set(remap) - {0})
        if stray:
            raise InputError(
                f"{source}: label values {stray[:10]} are not in the dataset's label table {sorted(remap)}; "
                "add them to \"labels\" or give a label_remap."
            )
    if remap is not None:
        lut = np.zeros(int(max(array.max(), max(remap))) + 1, dtype=np.uint8)
        for src, dst in remap.items():
            lut[src] = dst
        return lut[array.astype(np.int64)]
    bad = sorted(set(np.unique(array).tolist()) - set(valid) - {0})
    if bad:
        raise InputError(f"{source}: label values {bad[:10]} are not among the dataset's labels {sorted(valid)}; add a label_remap.")
    return array.astype(np.uint8)


def prepare_case(
    case: Case,
    spacing: Sequence[float],
    label_values: Sequence[int],
    profile: ModalityProfile | None = None,
    fractions: Sequence[float] = (0.0,),
) -> PreparedCase:
    """Read, normalise (``profile``, default the library's profile of the case's modality), reorient,
    resample and crop one case. ``fractions``: the image is normalised at the first (the profile's own
    bounds at 0), the crop found on it, and the further ones (a normalisation ensemble,
    :func:`.profile_jitter.blended_normaliser`, as the ``Segmenter`` runs it) are kept in that crop as ``passes``."""
    image = read_image(case.image)
    raw = image.array
    profile = profile or get_modality(case.modality)
    alternate = unit_alternate(profile, raw)
    normalise = blended_normaliser(profile, raw)  # each foreground choice's percentiles once for all fractions
    image.array = normalise(fractions[0])  # profile.normalize(raw) at 0
    model_image = to_model_space(image, spacing)
    label = None
    if case.label is not None:
        lab = read_labelmap(case.label, reference=image)
        lab.array = remap_label_array(lab.array, case.label_remap, label_values, str(case.label), strict=case.remap_is_table)
        if not lab.array.any():
            warnings.warn(
                f"{case.label}: the label map holds only background (0) after remapping, so case {case.name} "
                "teaches background only; check the file and its label_remap.",
                stacklevel=2,
            )
        label = to_model_space(lab, spacing, is_label=True).array.astype(np.uint8)
    bbox = foreground_bbox(model_image.array, threshold=0.05, margin=4)
    img = crop(model_image.array, bbox).astype(np.float32)
    passes = []
    for t in fractions[1:]:
        image.array = normalise(t)
        passes.append(crop(to_model_space(image, spacing).array, bbox).astype(np.float32))
    return PreparedCase(case.name, case.modality, img, None if label is None else crop(label, bbox), case.weight, alternate,
                        tuple(passes))
