"""Bring a dataset case into model space: normalised intensities, canonical orientation, the
model's spacing, cropped to the body."""

from __future__ import annotations

import hashlib
import json
import threading
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

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


class PreparedCache:
    """The last prepared cases of this process, at most ``max_bytes`` of arrays, least recently used
    dropped first: a process that builds several trainers on the same files (a benchmark of methods, a
    comparison of recipes, a fine-tune beside its parent's run) reads and resamples each case once.

    A case is found again only when its files hold the same bytes (a digest of each; a file rewritten in
    place is read again) and every preparation setting is the same; each caller gets its own copies of
    the arrays, under its own case's name and weight."""

    def __init__(self, max_bytes: int = 256 * 2**20) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple, tuple[PreparedCase, bool]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @staticmethod
    def key(case: Case, spacing: Sequence[float], label_values: Sequence[int], profile: ModalityProfile,
            fractions: Sequence[float]) -> tuple:
        files = tuple(_file_identity(p) for p in (case.image, case.label))
        remap = None if case.label_remap is None else tuple(sorted(case.label_remap.items()))
        settings = (profile.name, profile.kind, json.dumps(profile.params, sort_keys=True, default=str))
        return (files, case.modality, remap, case.remap_is_table, tuple(map(float, spacing)), tuple(map(int, label_values)),
                settings, tuple(map(float, fractions)))

    def get(self, key: tuple) -> tuple[PreparedCase, bool] | None:
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
            return found

    def put(self, key: tuple, prepared: PreparedCase, background_only: bool) -> None:
        size = _nbytes(prepared)
        if size > self.max_bytes:
            return
        with self._lock:
            if key in self._entries:
                self._bytes -= _nbytes(self._entries.pop(key)[0])
            self._entries[key] = (_copy(prepared), background_only)
            self._bytes += size
            while self._bytes > self.max_bytes:
                self._bytes -= _nbytes(self._entries.popitem(last=False)[1][0])

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)


def _file_identity(path: Path | str | None) -> str | None:
    """A digest of the file's bytes (a fraction of the time that reading and resampling it takes)."""
    if path is None:
        return None
    digest = hashlib.blake2b(digest_size=20)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _nbytes(prepared: PreparedCase) -> int:
    arrays = [prepared.image, prepared.label, *prepared.passes]
    return sum(a.nbytes for a in arrays if a is not None)


def _copy(prepared: PreparedCase, case: Case | None = None) -> PreparedCase:
    """A new :class:`PreparedCase` with its own arrays; ``case``: under that case's name and weight."""
    name, weight = (prepared.name, prepared.weight) if case is None else (case.name, case.weight)
    label = None if prepared.label is None else prepared.label.copy()
    return PreparedCase(name, prepared.modality, prepared.image.copy(), label, weight, prepared.alternate,
                        tuple(p.copy() for p in prepared.passes))


PREPARED = PreparedCache()


def _warn_background_only(case: Case, stacklevel: int) -> None:
    warnings.warn(
        f"{case.label}: the label map holds only background (0) after remapping, so case {case.name} "
        "teaches background only; check the file and its label_remap.",
        stacklevel=stacklevel,  # prepare_case's caller
    )


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
    :func:`.profile_jitter.blended_normaliser`, as the ``Segmenter`` runs it) are kept in that crop as ``passes``.

    A case this process prepared before with the same files and settings comes from :data:`PREPARED`."""
    profile = profile or get_modality(case.modality)
    key = PREPARED.key(case, spacing, label_values, profile, fractions)
    found = PREPARED.get(key)
    if found is not None:
        prepared, background_only = found
        if background_only:
            _warn_background_only(case, 3)
        return _copy(prepared, case)
    prepared, background_only = _prepare_case(case, spacing, label_values, profile, fractions)
    PREPARED.put(key, prepared, background_only)
    return prepared


def _prepare_case(case: Case, spacing: Sequence[float], label_values: Sequence[int], profile: ModalityProfile,
                  fractions: Sequence[float]) -> tuple[PreparedCase, bool]:
    """:func:`prepare_case` without the cache, and whether the label map held only background."""
    image = read_image(case.image)
    raw = image.array
    alternate = unit_alternate(profile, raw)
    normalise = blended_normaliser(profile, raw)  # each foreground choice's percentiles once for all fractions
    image.array = normalise(fractions[0])  # profile.normalize(raw) at 0
    model_image = to_model_space(image, spacing)
    label, background_only = None, False
    if case.label is not None:
        lab = read_labelmap(case.label, reference=image)
        lab.array = remap_label_array(lab.array, case.label_remap, label_values, str(case.label), strict=case.remap_is_table)
        background_only = not lab.array.any()
        if background_only:
            _warn_background_only(case, 4)
        label = to_model_space(lab, spacing, is_label=True).array.astype(np.uint8)
    bbox = foreground_bbox(model_image.array, threshold=0.05, margin=4)
    img = crop(model_image.array, bbox).astype(np.float32)
    passes = []
    for t in fractions[1:]:
        image.array = normalise(t)
        passes.append(crop(to_model_space(image, spacing).array, bbox).astype(np.float32))
    prepared = PreparedCase(case.name, case.modality, img, None if label is None else crop(label, bbox), case.weight,
                            alternate, tuple(passes))
    return prepared, background_only
