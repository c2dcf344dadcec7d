"""Geometry of the model space: reorientation, resampling, return to the input grid, cropping."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk

from .errors import InputError
from .io import Volume

CANONICAL_ORIENTATION = "LPS"
IDENTITY_DIRECTION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def _volume_like(image: sitk.Image, source: Volume) -> Volume:
    return Volume.from_sitk(image, source.modality_tag)


def reorient(volume: Volume) -> Volume:
    """Permute and flip axes to the canonical LPS orientation, keeping every voxel's physical position.

    An axis-aligned input gets the identity direction; an oblique one keeps its residual rotation.
    A volume already stored in LPS (identity direction) comes back as it is, without a copy.
    """
    if tuple(float(d) for d in volume.direction) == IDENTITY_DIRECTION:
        return Volume(
            volume.array,
            tuple(float(s) for s in volume.spacing),
            tuple(float(o) for o in volume.origin),
            IDENTITY_DIRECTION,
            volume.modality_tag,
        )
    image = sitk.DICOMOrient(volume.to_sitk(), CANONICAL_ORIENTATION)
    return _volume_like(image, volume)


def _resample(
    image: sitk.Image,
    size: Sequence[int],
    spacing: Sequence[float],
    origin: Sequence[float],
    direction: Sequence[float],
    interpolator: int,
    pixel_type: int,
    *,
    extrapolate: bool,
) -> sitk.Image:
    f = sitk.ResampleImageFilter()
    f.SetSize([int(s) for s in size])
    f.SetOutputSpacing(tuple(float(s) for s in spacing))
    f.SetOutputOrigin(tuple(origin))
    f.SetOutputDirection(tuple(direction))
    f.SetInterpolator(interpolator)
    f.SetOutputPixelType(pixel_type)
    f.SetDefaultPixelValue(0)
    f.SetUseNearestNeighborExtrapolator(extrapolate)
    return f.Execute(image)


def resample_to_spacing(volume: Volume, spacing: Sequence[float], *, is_label: bool = False) -> Volume:
    """Resample to ``spacing`` (x, y, z mm) with the same origin, direction and physical extent.

    New size = round(old size * old spacing / new spacing). Images use linear interpolation and
    become float32; label maps use nearest neighbour and keep their integer type. Points just past
    the last input voxel take the nearest voxel's value.
    """
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != 3 or min(spacing) <= 0:
        raise InputError(f"spacing {spacing}: give three positive spacings in mm (x, y, z).")
    image = volume.to_sitk()
    size = [
        max(1, round(n * old / new)) for n, old, new in zip(volume.size, volume.spacing, spacing, strict=True)
    ]
    interpolator = sitk.sitkNearestNeighbor if is_label else sitk.sitkLinear
    pixel_type = image.GetPixelID() if is_label else sitk.sitkFloat32
    out = _resample(
        image, size, spacing, volume.origin, volume.direction, interpolator, pixel_type, extrapolate=True
    )
    return _volume_like(out, volume)


def to_model_space(volume: Volume, spacing: Sequence[float], *, is_label: bool = False) -> Volume:
    """Reorient to LPS, then resample to ``spacing``."""
    return resample_to_spacing(reorient(volume), spacing, is_label=is_label)


def _reference_volume(array: np.ndarray, reference: Volume) -> Volume:
    """``array`` with exactly the reference's geometry values (copied, not recomputed)."""
    return Volume(
        array,
        tuple(reference.spacing),
        tuple(reference.origin),
        tuple(reference.direction),
        reference.modality_tag,
    )


def _reference_args(reference: Volume) -> tuple:
    return reference.size, reference.spacing, reference.origin, reference.direction


def to_input_grid(labels: Volume, reference: Volume) -> Volume:
    """Resample a model-space label map onto the reference (input) grid through physical space.

    Nearest neighbour, identity transform, 0 outside the label map. The result's spacing, origin,
    direction and size are exactly the reference's.
    """
    image = labels.to_sitk()
    out = _resample(
        image, *_reference_args(reference), sitk.sitkNearestNeighbor, image.GetPixelID(), extrapolate=False
    )
    return _reference_volume(sitk.GetArrayFromImage(out), reference)


def probabilities_to_input_grid(
    probs: np.ndarray, model_space_geometry: Volume, reference: Volume
) -> np.ndarray:
    """Resample class probabilities ``[C, z, y, x]`` from model space onto the reference grid.

    Linear per channel; points just past the model-space grid take the nearest voxel's value.
    Returns float32 ``[C, z', y', x']`` on the reference grid.
    """
    probs = np.asarray(probs)
    if probs.ndim != 4 or probs.shape[1:] != model_space_geometry.array.shape:
        raise InputError(
            f"probabilities of shape {probs.shape}: expected [C, *{model_space_geometry.array.shape}]; "
            "pass the probabilities computed on the model-space grid."
        )
    channels = []
    for channel in probs:
        geometry = Volume(channel.astype(np.float32), *_geometry(model_space_geometry))
        out = _resample(
            geometry.to_sitk(),
            *_reference_args(reference),
            sitk.sitkLinear,
            sitk.sitkFloat32,
            extrapolate=True,
        )
        channels.append(sitk.GetArrayFromImage(out))
    return np.stack(channels).astype(np.float32, copy=False)


def sub_grid(volume: Volume, box: Sequence[slice]) -> tuple:
    """Size, spacing, origin and direction (SimpleITK order) of the voxels ``volume.array[box]``
    (``box``: z, y, x slices with explicit starts and stops): the same grid points, a smaller extent."""
    start = np.array([b.start for b in box[::-1]], dtype=np.float64)  # x, y, z
    direction = np.reshape(np.asarray(volume.direction, dtype=np.float64), (3, 3))
    origin = np.asarray(volume.origin, dtype=np.float64) + direction @ (np.asarray(volume.spacing, dtype=np.float64) * start)
    size = [int(b.stop - b.start) for b in box[::-1]]
    return size, tuple(volume.spacing), tuple(float(o) for o in origin), tuple(volume.direction)


def labels_from_probabilities(
    probs: np.ndarray, model_space: Volume, bbox: Sequence[slice], reference: Volume, region: Sequence[slice]
) -> np.ndarray:
    """Labels on ``reference.array[region]``: the argmax of class probabilities ``probs`` ``[C, ...]``
    (channel = label value, 0 = background), given on ``model_space.array[bbox]``, each resampled
    linearly onto the reference grid's points (as nnU-Net returns to the original spacing before its
    argmax). Smoother organ borders than nearest-neighbour labels where the reference grid is finer.

    One organ channel at a time, so memory holds three float32 arrays of the region, not ``C``:
    linear interpolation keeps the channels' sum, so background's probability is one minus the organs'
    (outside the model-space grid every organ's is 0). Ties go to the lower channel, as ``argmax``.
    """
    probs = np.asarray(probs)
    out_shape = tuple(int(r.stop - r.start) for r in region)
    labels = np.zeros(out_shape, dtype=np.uint8)
    if probs.shape[0] < 2:
        return labels
    source = sub_grid(model_space, bbox)
    target = sub_grid(reference, region)
    best = total = None
    for channel in range(1, probs.shape[0]):
        image = Volume(np.ascontiguousarray(probs[channel], dtype=np.float32), *source[1:]).to_sitk()
        out = sitk.GetArrayFromImage(_resample(image, *target, sitk.sitkLinear, sitk.sitkFloat32, extrapolate=False))
        if best is None:
            best, total = out, out.copy()
            labels[:] = channel
            continue
        better = out > best
        labels[better] = channel
        np.maximum(best, out, out=best)
        total += out
    labels[best <= 1.0 - total] = 0
    return labels


def _geometry(volume: Volume) -> tuple:
    return volume.spacing, volume.origin, volume.direction


# --------------------------------------------------------------------------- cropping


def foreground_bbox(array: np.ndarray, threshold: float = 0.05, margin: int | Sequence[int] = 2) -> tuple[slice, ...]:
    """Bounding box of ``array > threshold`` widened by ``margin`` voxels (one number, or one per
    axis); the whole array when empty."""
    mask = np.asarray(array) > threshold
    if not mask.any():
        return tuple(slice(0, n) for n in mask.shape)
    margins = [margin] * mask.ndim if isinstance(margin, int) else list(margin)
    bbox = []
    for axis, (n, pad) in enumerate(zip(mask.shape, margins, strict=True)):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        bbox.append(slice(max(0, int(hits[0]) - pad), min(n, int(hits[-1]) + 1 + pad)))
    return tuple(bbox)


def crop(array: np.ndarray, bbox: Sequence[slice]) -> np.ndarray:
    """The part of ``array`` inside ``bbox``; leading (channel) axes are kept whole."""
    return array[(..., *bbox)]


def uncrop(
    array: np.ndarray, bbox: Sequence[slice], full_shape: Sequence[int], fill: float = 0
) -> np.ndarray:
    """Put a cropped ``array`` back into an array of ``full_shape`` filled with ``fill``.

    ``full_shape`` is the whole shape, or only the spatial shape (leading axes come from ``array``).
    """
    full_shape = tuple(int(n) for n in full_shape)
    if len(full_shape) < array.ndim:
        full_shape = array.shape[: array.ndim - len(full_shape)] + full_shape
    out = np.full(full_shape, fill, dtype=array.dtype)
    out[(..., *bbox)] = array
    return out
