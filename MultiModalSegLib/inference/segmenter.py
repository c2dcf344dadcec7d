"""The Segmenter: a bundle applied to one volume of one modality, returned on the input's grid.

Pipeline: intensity profile of the modality (as stored in the bundle) -> canonical orientation and
model spacing -> crop to the body -> MONAI sliding window (overlap, Gaussian blending) -> argmax ->
optional largest connected component per organ -> nearest-neighbour resampling onto the input grid,
whose origin, spacing, direction and size the result copies exactly; at ``normal`` quality, on an
input grid finer than the model's, the voxels around the organs then take the argmax of the
probabilities resampled linearly (and each organ's largest piece is kept again). For the modalities a
bundle names in ``inference.polarity_ensemble`` (trained under both brightness orders,
:mod:`..data.polarity`), the sliding window runs on the image and on its negative and their
probabilities are averaged. For those it names in ``inference.normalisation_ensemble`` (fractions
``t`` in [0, 1]), the image is normalised once per fraction, with the profile's bounds moved ``t`` of
the way to its other foreground choice's (:mod:`..data.profile_jitter`), and the class probabilities
of the passes are averaged.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from scipy import ndimage

from ..bundle import Bundle, check_output_channels
from ..data.profile_jitter import BlendedNormaliser, blended_normaliser
from ..device import cpu_channels_last as channels_last
from ..device import resolve_device
from ..dropped_pieces import DEFAULT_DROPPED_PIECES, DROPPED_PIECES
from ..errors import BundleError, InputError
from ..io import Volume, probabilities_path, read_image, write_image_atomic, write_segmentation
from ..labels import LabelInfo
from ..modalities import (
    DETECTABLE_MODALITIES,
    detect_modality_reason,
    get_modality,
    recorded_profiles,
)
from ..preprocessing import (
    crop,
    foreground_bbox,
    labels_from_probabilities,
    probabilities_to_input_grid,
    to_input_grid,
    to_model_space,
    uncrop,
)
from ..trust import Provenance, load_model
from .organ_layout import Placement, layout_for
from .sliding_window import add_pass_probabilities, count_windows, predict_logits

Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class Quality:
    """How the sliding window runs. Both qualities work at the model's own voxel size (a network
    trained at 3 mm segments nothing at 6 mm). ``fast`` tiles the cropped volume with windows of the
    training patch side by side, without overlap and without Gaussian weighting: each voxel is
    computed about once instead of up to eight times at overlap 0.5, and every window holds as much
    of the body as the training patches did (the networks' instance normalisation sees the
    statistics it was trained on). ``window_scale`` > 1 lets windows grow to that many times the
    patch per axis (fewer, larger windows). ``min_saving``: a quality whose windows would not compute
    at least that many times fewer voxels than the bundle's own settings (a small volume, e.g. a
    20-slice MR) runs with the bundle's settings instead: there is little time to gain there, and the
    overlapping windows are the more accurate. ``cpu_bfloat16``: on a CPU that computes bfloat16 in
    hardware (x86 AVX512-BF16 or AMX), the network runs in bfloat16 (about twice as fast; elsewhere
    float32, see :func:`~MultiModalSegLib.device.cpu_bfloat16_native`). ``smooth_labels``: where the
    input grid is finer than the model's, the labels near the organs are the argmax of the
    probabilities resampled linearly onto it (:func:`~MultiModalSegLib.preprocessing.labels_from_probabilities`),
    not the model-space labels copied to the nearest voxels; ``fast`` keeps the nearest-voxel copy.
    ``benchmarks/fast_variants.py`` measures the candidates on the real scans."""

    window_scale: int = 1
    overlap: float | None = None  # None: the bundle's
    mode: str | None = None  # None: the bundle's
    spacing_scale: float = 1.0  # the network runs at the model's spacing times this
    min_saving: float = 1.0  # 1: always this quality's windows
    cpu_bfloat16: bool = False
    smooth_labels: bool = True  # labels from probabilities resampled linearly to the input grid (else nearest)

    def network_spacing(self, model_spacing: list[float]) -> list[float]:
        """The voxel size (x, y, z mm) the network runs at for a model trained at ``model_spacing``."""
        return [float(s) * self.spacing_scale for s in model_spacing]


QUALITIES = {
    "normal": Quality(),
    "fast": Quality(overlap=0.0, mode="constant", min_saving=2.0, cpu_bfloat16=True, smooth_labels=False),
}
WINDOW_MULTIPLE = 16  # window sides are multiples of this (the U-Nets downsample by up to 2**4)


def window_size(patch_size: list[int], shape: tuple[int, ...], scale: int) -> list[int]:
    """The sliding window for ``scale``: per axis, the side between the training patch and ``scale``
    times it (a multiple of :data:`WINDOW_MULTIPLE`) whose non-overlapping tiles cover the volume
    with the fewest computed voxels (then the fewest windows)."""
    if scale == 1:
        return list(patch_size)
    window = []
    for p, n in zip(patch_size, shape, strict=True):
        sides = range(p, p * scale + 1, WINDOW_MULTIPLE) if n > p else [p]
        window.append(min(sides, key=lambda w: (-(-n // w) * w, -(-n // w))))
    return window


@dataclass
class Segmentation:
    """A result on the input grid: ``labels`` (uint8 Volume), their names/colours, the modality used.

    ``detected_modality`` / ``detected_reason``: what detection (DICOM tag, else intensities) says of
    the image; ``None`` when the modality was given and detection cannot judge it (see
    :data:`..modalities.DETECTABLE_MODALITIES`). :attr:`modality_disagrees` and :attr:`all_empty`
    are the two facts a user must not miss; :meth:`warnings` says them in sentences.
    """

    labels: Volume
    label_info: list[LabelInfo]
    modality: str
    modality_reason: str
    probabilities: np.ndarray | None  # the network's class probabilities, before any piece is dropped
    seconds: float
    detected_modality: str | None = None
    detected_reason: str = ""
    rival_pieces: dict[str, tuple[float, float]] = field(default_factory=dict)  # organ -> (kept ml, dropped ml)
    out_of_place: tuple[str, ...] = ()  # organs whose largest piece was dropped for lying far from the organ's place

    def volumes_ml(self) -> dict[str, float]:
        voxel_ml = float(np.prod(self.labels.spacing)) / 1000.0
        counts = np.bincount(self.labels.array.ravel(), minlength=max(lab.value for lab in self.label_info) + 1)
        return {lab.name: float(counts[lab.value] * voxel_ml) for lab in self.label_info}

    @property
    def all_empty(self) -> bool:
        """True when not one voxel carries an organ's label."""
        return not np.isin(self.labels.array, [lab.value for lab in self.label_info]).any()

    @property
    def modality_disagrees(self) -> bool:
        """True when the modality used is not the one detection finds (a given ``--modality``)."""
        return self.detected_modality is not None and self.detected_modality != self.modality

    def warnings(self) -> list[str]:
        """One sentence per fact the user must not miss: a given modality that detection contradicts,
        a result in which every organ is empty, an organ whose dropped piece rivalled the piece kept
        (:func:`rival_pieces`), or was its largest and lay out of place (:mod:`.organ_layout`)."""
        out = []
        if self.modality_disagrees:
            out.append(
                f"the modality was given as {self.modality} but the image looks like {self.detected_modality} "
                f"({self.detected_reason}); if the result is empty or wrong, segment again with modality "
                f"{self.detected_modality} or auto"
            )
        if self.all_empty:
            cause = "the modality is the likely cause" if self.modality_disagrees else (
                f"check that the image is a {self.modality} scan of the region the model was trained on"
            )
            out.append(f"no organ was found: every label ({', '.join(lab.name for lab in self.label_info)}) is empty; {cause}")
        for organ, (kept, dropped) in self.rival_pieces.items():
            if organ in self.out_of_place:
                out.append(
                    f"{organ}: its largest piece (about {dropped:.0f} mL) lay far from where the {organ} lies among the other "
                    f"organs and was dropped for a piece of about {kept:.0f} mL that lies there; check that the piece kept is "
                    f"the {organ}"
                )
                continue
            out.append(
                f"{organ}: a separate piece of about {dropped:.0f} mL was dropped beside the piece kept (about {kept:.0f} mL; "
                f"each organ keeps its largest piece); check that the piece kept is the {organ} and not a neighbouring structure"
            )
        return out


RIVAL_SHARE = 0.5  # a dropped piece at least this share of the kept one ...
RIVAL_MIN_ML = 5.0  # ... and at least this large is worth a warning


def rival_pieces(labels: np.ndarray, label_info: list[LabelInfo], spacing: tuple[float, ...]) -> dict[str, tuple[float, float]]:
    """Per organ whose second-largest 26-connected piece is at least :data:`RIVAL_SHARE` of its largest
    and :data:`RIVAL_MIN_ML` ml: the two pieces' volumes (ml). Keeping the largest piece then chose
    between two candidates of similar size, and the choice may be wrong: a network can call a
    neighbouring structure (the soft tissue of a shoulder, the heart) an organ with as much
    confidence as the organ itself (``training/reports/false-pieces/``)."""
    return rivals(largest_pieces(labels, [lab.value for lab in label_info])[1], label_info, spacing)


def rivals(pieces: dict[int, Pieces], label_info: list[LabelInfo], spacing: tuple[float, ...]) -> dict[str, tuple[float, float]]:
    """:func:`rival_pieces` from :func:`largest_pieces`' voxel counts of each value's kept and largest dropped piece."""
    voxel_ml = float(np.prod(spacing)) / 1000.0
    out = {}
    for lab in label_info:
        if lab.value in pieces:
            kept, dropped = (count * voxel_ml for count in pieces[lab.value][:2])
            if dropped >= RIVAL_SHARE * kept and dropped >= RIVAL_MIN_ML:
                out[lab.name] = (round(kept, 1), round(dropped, 1))
    return out


class Pieces(NamedTuple):
    """One organ's pieces as :func:`largest_pieces` left them: voxels of the piece kept and of the largest piece
    dropped; ``out_of_place``: the piece kept is not the largest, which lay far from the organ's place."""

    kept: int
    dropped: int
    out_of_place: bool = False


def largest_pieces(labels: np.ndarray, values: list[int], placement: Placement | None = None,
                   voxel_ml: float = 0.0) -> tuple[np.ndarray, dict[int, Pieces]]:
    """``labels`` with each value of ``values`` kept to one 26-connected component (organs are one piece), and,
    per value that had more than one, the voxel counts of the piece kept and of the largest dropped. Each value
    is labelled within its own bounding box (one pass finds them all), not the whole grid.

    The piece kept is the largest, unless a ``placement`` (:class:`.organ_layout.Placement`) finds it out of
    place: then it is the piece of at least :data:`RIVAL_SHARE` of the largest's voxels and
    :data:`RIVAL_MIN_ML` ml (``voxel_ml`` a voxel) that lies nearest the organ's place among the others."""
    out = labels.copy()
    found = {}
    for value, box, mask, comp in split_organs(labels, values):
        sizes = np.bincount(comp.ravel())
        sizes[0] = 0
        largest = keep = int(sizes.argmax())
        if placement is not None:
            candidates = [int(i) for i in np.flatnonzero(sizes >= RIVAL_SHARE * sizes[largest]) if sizes[i] * voxel_ml >= RIVAL_MIN_ML]
            keep = placement.choose(value, comp, candidates, largest, tuple(s.start for s in box))
        found[value] = Pieces(int(sizes[keep]), int(np.delete(sizes, keep).max()), keep != largest)
        out[box][mask & (comp != keep)] = 0
    return out, found


def split_organs(labels: np.ndarray, values: list[int]) -> Iterator[tuple[int, tuple[slice, ...], np.ndarray, np.ndarray]]:
    """Per value of ``values`` found in more than one 26-connected piece: the value, its bounding box in
    ``labels``, its mask there and its pieces labelled 1, 2, ... there (each value labelled in its own box;
    one pass finds the boxes)."""
    structure = np.ones((3, 3, 3), dtype=bool)
    boxes = ndimage.find_objects(labels) if labels.size and labels.max() > 0 else []
    for value in values:
        box = boxes[value - 1] if 0 < value <= len(boxes) else None
        if box is None:
            continue
        mask = labels[box] == value
        comp, n = ndimage.label(mask, structure=structure)
        if n > 1:
            yield value, box, mask, comp


def organ_pieces(labels: np.ndarray, label_info: list[LabelInfo], grid: Volume,
                 layout: dict[str, tuple[float, float, float]] | None) -> tuple[np.ndarray, dict[int, Pieces]]:
    """:func:`largest_pieces` of the organs of ``label_info`` in ``labels`` (an array on ``grid``) under
    ``layout`` (:func:`.organ_layout.layout_for`; ``None``: the largest piece of each)."""
    placement = Placement(labels, grid, label_info, layout) if layout else None
    return largest_pieces(labels, [lab.value for lab in label_info], placement, float(np.prod(grid.spacing)) / 1000.0)


def keep_largest_component(labels: np.ndarray, values: list[int]) -> np.ndarray:
    """Per label value, keep only its largest 26-connected component (organs are one piece)."""
    return largest_pieces(labels, values)[0]


def suppress_dropped_pieces(logits: torch.Tensor, before: np.ndarray, after: np.ndarray,
                            bbox: tuple[slice, ...]) -> torch.Tensor | None:
    """Where choosing each organ's piece turned an organ voxel to background (``before`` the argmax labels,
    ``after`` the labels kept, both on the whole model grid; ``logits`` ``[1, C, *crop]`` on ``bbox``): a copy of
    ``logits`` with that organ's logit there below every other class's, so that the voxel's label becomes its
    next most probable class: a piece of one organ inside another (part of a spleen called left kidney) goes to
    the organ around it, a false piece in the body wall to background. ``None`` where no voxel was dropped."""
    dropped = (before != after)[bbox]
    if not dropped.any():
        return None
    index = np.nonzero(dropped)
    classes = torch.as_tensor(before[bbox][index].astype(np.int64))
    out = logits.clone()
    out[0][(classes, *(torch.as_tensor(i) for i in index))] = torch.finfo(out.dtype).min
    return out


def keep_pieces_under(labels: np.ndarray, values: list[int], guide: np.ndarray) -> np.ndarray:
    """Per label value, keep only the 26-connected component of ``labels`` with the most voxels of that value in
    ``guide`` (a label map on the same grid; ties and no overlap: the larger): the piece another grid kept."""
    out = labels.copy()
    for value, box, mask, comp in split_organs(labels, values):
        n = int(comp.max())
        under = np.bincount(comp[guide[box] == value], minlength=n + 1)[1:]
        sizes = np.bincount(comp.ravel(), minlength=n + 1)[1:]
        keep = 1 + int(np.lexsort((-sizes, -under))[0])
        out[box][mask & (comp != keep)] = 0
    return out


def polarity_ensemble_modalities(metadata: dict, profiles: dict, source: object) -> frozenset[str]:
    """The modalities a bundle predicts as the mean of an image and its negative (its ``inference``
    block's ``polarity_ensemble``, :mod:`..data.polarity`): modalities it has, of percentile profiles.
    That it is a list of names the bundle schema has checked on loading."""
    named = metadata.get("inference", {}).get("polarity_ensemble", [])
    for modality in named:
        if modality not in profiles or profiles[modality].kind != "percentile":
            raise BundleError(f"{source}: inference.polarity_ensemble names {modality!r}, which is not one of the bundle's "
                              f"modalities of arbitrary units ({[m for m, p in profiles.items() if p.kind == 'percentile']}); "
                              "the bundle is inconsistent, re-export it.")
    return frozenset(named)


def normalisation_ensemble_fractions(metadata: dict, profiles: dict, source: object) -> dict[str, tuple[float, ...]]:
    """The normalisations a bundle averages per modality (its ``inference`` block's
    ``normalisation_ensemble``: modality -> fractions of the way from the profile's bounds to its other
    foreground's, :func:`..data.profile_jitter.normalize_blended`): modalities it has, of percentile
    profiles. That each names at least two fractions in [0, 1] the bundle schema has checked on loading."""
    named = metadata.get("inference", {}).get("normalisation_ensemble", {})
    for modality in named:
        if modality not in profiles or profiles[modality].kind != "percentile":
            raise BundleError(f"{source}: inference.normalisation_ensemble names {modality!r}, which is not one of the bundle's "
                              f"modalities of arbitrary units ({[m for m, p in profiles.items() if p.kind == 'percentile']}); "
                              "the bundle is inconsistent, re-export it.")
    return {modality: tuple(float(t) for t in fractions) for modality, fractions in named.items()}


def finer(volume: Volume, model_space: Volume) -> bool:
    """True when some axis of ``volume``'s grid is finer than the model's voxels (by more than 1 %)."""
    return min(float(s) for s in volume.spacing) < 0.99 * min(float(s) for s in model_space.spacing)


class Segmenter:
    """Load a bundle once, then segment any number of volumes.

    ``model``: a bundle path, a name from the models manifest, or ``None`` for the default model.
    ``device``: ``auto`` (CUDA when present), ``cpu`` or ``cuda``. ``amp``: float16 autocast on CUDA.
    ``quality``: ``normal`` or ``fast`` (windows of up to twice the training patch per axis, side by side
    without overlap, each voxel computed about once; see :class:`Quality`). ``cpu_channels_last``: on the
    CPU, compute the 3D convolutions channels-last (:func:`..device.cpu_channels_last`; faster, the same
    float32 arithmetic summed in another order; ``benchmarks/inference_memory_format.py``).
    """

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        device: str = "auto",
        amp: bool = True,
        overlap: float | None = None,
        sw_batch_size: int | None = None,
        largest_component: bool = True,
        dropped_pieces: str = DEFAULT_DROPPED_PIECES,
        quality: str | Quality = "normal",
        organ_layout: bool = True,
        cpu_channels_last: bool = True,
    ) -> None:
        self.bundle: Bundle
        self.provenance: Provenance  # verified / trusted / unverified (see MultiModalSegLib.trust)
        self.bundle, self.provenance = load_model(model)
        self.device = resolve_device(device)
        self.amp = amp
        meta = self.bundle.metadata
        inference = meta.get("inference", {})
        if not isinstance(quality, Quality) and quality not in QUALITIES:
            raise InputError(f"unknown quality {quality!r}; choose one of {list(QUALITIES)}.")
        self.quality = quality if isinstance(quality, Quality) else QUALITIES[quality]
        # the bundle's own sliding window (normal quality: overlap, blending, windows per batch), then this quality's
        bundle_overlap = inference.get("overlap", 0.5) if overlap is None else overlap
        self.bundle_window = (bundle_overlap, inference.get("mode", "gaussian"), sw_batch_size or inference.get("sw_batch_size", 2))
        quality_overlap = bundle_overlap if self.quality.overlap is None else self.quality.overlap
        self.overlap = quality_overlap if overlap is None else overlap
        self.sw_batch_size = sw_batch_size or (1 if self.quality.window_scale > 1 else self.bundle_window[2])
        self.mode = self.quality.mode or self.bundle_window[1]
        self.largest_component = largest_component
        if dropped_pieces not in DROPPED_PIECES:
            raise InputError(f"dropped_pieces {dropped_pieces!r}: choose one of {list(DROPPED_PIECES)}.")
        self.dropped_pieces = dropped_pieces
        self.layout = layout_for(self.bundle.labels) if organ_layout else None  # a spatial prior on which piece to keep
        self.spacing = [float(s) for s in meta["spacing"]]
        self.patch_size = list(meta["patch_size"])
        self.label_info = self.bundle.labels
        self.profiles = recorded_profiles(meta)
        self.polarity_ensemble = polarity_ensemble_modalities(meta, self.profiles, self.bundle.path)
        self.normalisation_ensemble = normalisation_ensemble_fractions(meta, self.profiles, self.bundle.path)
        self.net = self._network()
        self.channels_last = cpu_channels_last and channels_last(self.net, self.device)

    def _network(self) -> torch.nn.Module:
        from ..networks.exported import build_inference_network  # MONAI's blocks: imported when a model loads

        net = build_inference_network(self.bundle.metadata)
        try:
            net.load_state_dict(self.bundle.state_dict, strict=True)
        except RuntimeError as exc:
            raise BundleError(
                f"{self.bundle.path}: the weights do not fit the network its metadata describes "
                f"({str(exc).splitlines()[0]}); the bundle is inconsistent, re-export it."
            ) from exc
        out_channels = self.bundle.metadata["network"]["params"].get("out_channels")
        if out_channels is not None:
            check_output_channels(self.bundle, int(out_channels))
        return net.to(self.device).eval()

    def window_for(self, shape: tuple[int, ...]) -> list[int]:
        """This quality's sliding window for a cropped model-space volume of ``shape`` (z, y, x)."""
        return window_size(self.patch_size, tuple(shape), self.quality.window_scale)

    def sliding_window(self, shape: tuple[int, ...]) -> tuple[list[int], float, str, int]:
        """Window, overlap, blending mode and windows per batch for a cropped model-space volume of
        ``shape`` (z, y, x): this quality's, or the bundle's own where this quality would not save
        ``min_saving`` times the computed voxels (see :class:`Quality`)."""
        window = self.window_for(shape)
        if self.quality.min_saving > 1:
            own = count_windows(shape, window, self.overlap) * int(np.prod(window))
            bundle = count_windows(shape, self.patch_size, self.bundle_window[0]) * int(np.prod(self.patch_size))
            if own * self.quality.min_saving > bundle:
                return list(self.patch_size), *self.bundle_window
        return window, self.overlap, self.mode, self.sw_batch_size

    @property
    def modalities(self) -> list[str]:
        return list(self.profiles)

    def resolve_modality(self, volume: Volume, modality: str = "auto") -> tuple[str, str]:
        """The modality to use and why: the user's choice, or detection (DICOM tag, then intensities)."""
        if modality.lower() == "auto":
            name, reason = detect_modality_reason(volume)
        else:
            name, reason = get_modality(modality).name, "given by the user"
        if name not in self.profiles:
            raise InputError(
                f"model {self.bundle.name!r} was trained for {self.modalities}, not {name} ({reason}); "
                "choose a model for this modality or pass the right --modality."
            )
        return name, reason

    def network_input(
        self, volume: Volume, modality: str, fraction: float = 0.0, bbox: tuple[slice, ...] | None = None,
        normaliser: BlendedNormaliser | None = None,
    ) -> tuple[Volume, tuple[slice, ...], torch.Tensor]:
        """What the sliding window runs on: the normalised model-space volume, the body's bounding box
        in it (threshold 0.05, margin 8 voxels; or ``bbox``) and the cropped float32 tensor ``[1, 1, Z, Y, X]``.

        ``modality`` is a resolved name (see :meth:`resolve_modality`); ``fraction``: the normalisation
        bounds that far toward the profile's other foreground choice's (a percentile profile only);
        ``normaliser``: :func:`..data.profile_jitter.blended_normaliser` of ``volume`` for that profile, kept
        across the passes of an ensemble so that the image's percentiles are taken once.
        """
        normaliser = normaliser or blended_normaliser(self.profiles[modality], volume.array)
        array = normaliser(fraction)  # the profile's own bounds at 0
        normalized = Volume(array, volume.spacing, volume.origin, volume.direction)
        model_space = to_model_space(normalized, self.quality.network_spacing(self.spacing))
        del normalized
        if bbox is None:
            bbox = foreground_bbox(model_space.array, threshold=0.05, margin=8)
        image = torch.from_numpy(np.ascontiguousarray(crop(model_space.array, bbox), dtype=np.float32))[None, None]
        return model_space, bbox, image

    def segment(
        self, volume: Volume, modality: str = "auto", *, probabilities: bool = False, progress: Progress | None = None
    ) -> Segmentation:
        """Segment one 3D volume; the returned label map is on ``volume``'s exact grid."""
        t0 = time.perf_counter()
        report = progress or (lambda f, m: None)
        name, reason = self.resolve_modality(volume, modality)
        detected: tuple[str | None, str] = (name, reason) if modality.lower() == "auto" else (None, "")
        if detected[0] is None and name in DETECTABLE_MODALITIES:
            detected = detect_modality_reason(volume)
        report(0.02, f"modality {name} ({reason})")
        fractions = self.normalisation_ensemble.get(name, (0.0,))
        normaliser = blended_normaliser(self.profiles[name], volume.array)
        model_space, bbox, image = self.network_input(volume, name, fractions[0], normaliser=normaliser)
        window, overlap, mode, sw_batch_size = self.sliding_window(tuple(image.shape[2:]))
        mean = None
        for i, fraction in enumerate(fractions):
            if i:  # the first pass's crop for every pass, so that their probabilities line up
                image = self.network_input(volume, name, fraction, bbox, normaliser)[2]
            report(0.1 + 0.75 * i / len(fractions), "running the network")
            logits = predict_logits(
                self.net,
                image,
                name,
                window,
                overlap=overlap,
                sw_batch_size=sw_batch_size,
                mode=mode,
                device=self.device,
                amp=self.amp,
                progress=lambda f, i=i: report(0.1 + 0.75 * (i + f) / len(fractions), "running the network"),
                cpu_bfloat16=self.quality.cpu_bfloat16,
                polarity_ensemble=name in self.polarity_ensemble,
            )
            if len(fractions) > 1:
                mean = add_pass_probabilities(mean, logits, len(fractions))
        if mean is not None:  # the log of the passes' mean probabilities: its softmax is that mean, its argmax their labels
            logits = torch.log(mean.clamp_min_(torch.finfo(mean.dtype).tiny))
        report(0.88, "mapping back to the input grid")
        def argmax_labels(logits: torch.Tensor) -> np.ndarray:  # on the whole model grid
            return uncrop(logits.argmax(1)[0].numpy().astype(np.uint8), bbox, model_space.array.shape)

        labels = argmax_labels(logits)
        network_logits = logits  # what ``probabilities`` returns: the network's own, whatever the pieces became
        dropped, moved = {}, ()
        if self.largest_component:  # one pass keeps each organ's piece (the largest, unless out of place) and says which rivalled it
            before = labels
            labels, pieces = organ_pieces(labels, self.label_info, model_space, self.layout)
            dropped = rivals(pieces, self.label_info, model_space.spacing)
            suppressed = suppress_dropped_pieces(logits, before, labels, bbox) if self.dropped_pieces == "next_class" else None
            if suppressed is not None:  # dropped voxels take their next class; a stray piece that leaves goes to background
                logits = suppressed
                labels = organ_pieces(argmax_labels(logits), self.label_info, model_space, self.layout)[0]
            moved = tuple(lab.name for lab in self.label_info if lab.value in pieces and pieces[lab.value].out_of_place)
        model_labels = Volume(labels, model_space.spacing, model_space.origin, model_space.direction)
        result = to_input_grid(model_labels, volume)
        smooth = self.quality.smooth_labels and finer(volume, model_space) and bool(result.array.any())
        # the probabilities the labels were drawn from (smoothing); also those returned where no piece was relabelled
        p = torch.softmax(logits.float(), 1)[0].numpy() if smooth or (probabilities and logits is network_logits) else None
        if smooth:
            result = self.smooth_labels(result, p, bbox, model_space, volume, moved)
        probs = None
        if probabilities:
            if logits is not network_logits:
                p = torch.softmax(network_logits.float(), 1)[0].numpy()
            full = np.zeros((p.shape[0], *model_space.array.shape), dtype=np.float32)
            full[0] = 1.0
            full[(slice(None), *bbox)] = p
            probs = probabilities_to_input_grid(full, model_space, volume)
        report(1.0, "done")
        return Segmentation(result, self.label_info, name, reason, probs, time.perf_counter() - t0, *detected, rival_pieces=dropped,
                            out_of_place=moved)

    def smooth_labels(self, nearest: Volume, probs: np.ndarray, bbox: tuple[slice, ...], model_space: Volume,
                      volume: Volume, moved: tuple[str, ...] = ()) -> Volume:
        """``nearest`` (model-space labels copied to the input grid, at least one organ voxel) with the
        voxels around its organs replaced, in place, by the argmax of the class probabilities ``probs``
        (on ``model_space.array[bbox]``) resampled linearly there; the largest piece of each organ kept
        again where the Segmenter keeps it (for the organs in ``moved``, whose largest piece the model grid
        dropped as out of place, the piece lying under the one it kept). Beyond a margin of one model voxel (and one input voxel)
        around the organs every label stays background, as in ``nearest``."""
        steps = [int(np.ceil(max(model_space.spacing) / s)) + 1 for s in volume.spacing[::-1]]  # z, y, x
        region = foreground_bbox(nearest.array, threshold=0, margin=steps)
        labels = nearest.array
        guide = labels.copy() if moved else None
        labels[region] = labels_from_probabilities(probs, model_space, bbox, volume, region)
        if self.largest_component:
            values = [lab.value for lab in self.label_info]
            placed = [lab.value for lab in self.label_info if lab.name in moved]
            labels = keep_largest_component(labels, [v for v in values if v not in placed])
            if placed:
                labels = keep_pieces_under(labels, placed, guide)
        return Volume(labels, nearest.spacing, nearest.origin, nearest.direction, nearest.modality_tag)

    def segment_file(
        self,
        path: str | Path,
        output: str | Path,
        modality: str = "auto",
        *,
        probabilities: bool = False,
        overwrite: bool = False,
        progress: Progress | None = None,
        series: str | None = None,
        refuse_empty: bool = False,
    ) -> tuple[Segmentation, list[Path]]:
        """Segment an image file or DICOM folder and write ``output`` (``.seg.nrrd``, ``.nii.gz``...).

        With ``probabilities``, a float ``<output stem>_probabilities.nii.gz`` (channels last) is written too.
        ``series`` picks the SeriesInstanceUID of a DICOM folder holding several. With ``refuse_empty``,
        a result in which every organ is empty raises ``InputError`` and nothing is written.
        """
        output = Path(output)
        for target in (output, probabilities_path(output)) if probabilities else (output,):
            if target.exists() and not overwrite:
                raise InputError(f"{target} already exists; pass --overwrite to replace it, or choose another output.")
        volume = read_image(path, series)
        seg = self.segment(volume, modality, probabilities=probabilities, progress=progress)
        if refuse_empty and seg.all_empty:
            raise InputError(f"{path}: {'; '.join(seg.warnings())}; nothing was written.")
        written = [write_segmentation(seg.labels, output, seg.label_info, overwrite=overwrite)]
        if seg.probabilities is not None:
            written.append(write_probabilities(seg.probabilities, volume, output))
        return seg, written


def write_probabilities(probs: np.ndarray, reference: Volume, output: Path) -> Path:
    """Class probabilities as a vector image on the input grid, written atomically."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.moveaxis(probs, 0, -1).astype(np.float32), isVector=True)
    reference.copy_geometry_to(image)
    return write_image_atomic(image, probabilities_path(output))
