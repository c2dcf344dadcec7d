"""Reorientation, resampling to model space and back to the input grid, cropping."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from MultiModalSegLib.errors import InputError
from MultiModalSegLib.io import Volume, read_image, read_labelmap
from MultiModalSegLib.preprocessing import (
    CANONICAL_ORIENTATION,
    crop,
    foreground_bbox,
    labels_from_probabilities,
    probabilities_to_input_grid,
    reorient,
    resample_to_spacing,
    sub_grid,
    to_input_grid,
    to_model_space,
    uncrop,
)

DATA = Path(__file__).resolve().parents[2] / "Resources" / "SampleData"  # copies of ../shared/data
IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def _geometry(volume: Volume) -> tuple:
    return volume.array.shape, volume.spacing, volume.origin, volume.direction


@pytest.fixture(scope="module")
def ct() -> tuple[Volume, Volume]:
    image = read_image(DATA / "abdomen_ct_01" / "image.nii.gz")
    return image, read_labelmap(DATA / "abdomen_ct_01" / "label_totalseg.nii.gz", image)


def test_reorient_ct_identity_and_same_positions(ct):
    image, _ = ct
    assert CANONICAL_ORIENTATION == "LPS"
    assert image.direction == (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
    out = reorient(image)
    assert out.direction == IDENTITY
    assert out.array.shape == image.array.shape
    before, after = image.to_sitk(), out.to_sitk()
    for index in [(0, 0, 0), (10, 70, 33), (121, 100, 111), (60, 50, 56)]:
        point = before.TransformIndexToPhysicalPoint(index)
        assert before[index] == after[after.TransformPhysicalPointToIndex(point)]


def test_resample_keeps_extent(ct):
    image, _ = ct
    out = resample_to_spacing(image, (2.0, 2.0, 4.5))
    assert out.size == (183, 152, 75)
    assert out.origin == image.origin and out.direction == image.direction
    assert out.array.dtype == np.float32
    with pytest.raises(InputError, match="spacing"):
        resample_to_spacing(image, (2.0, 0.0, 2.0))


def test_ct_round_trip(ct):
    image, labels = ct
    model = to_model_space(labels, (2.0, 2.0, 2.0), is_label=True)
    assert model.direction == IDENTITY and model.spacing == (2.0, 2.0, 2.0)
    assert model.array.dtype == labels.array.dtype
    back = to_input_grid(model, image)
    assert _geometry(back)[1:] == _geometry(image)[1:] and back.array.shape == image.array.shape
    assert back.array.dtype == labels.array.dtype
    assert _dice(back.array == 5, labels.array == 5) > 0.9


def _oblique_volume() -> tuple[Volume, Volume]:
    rotation = np.array(sitk.Euler3DTransform((0, 0, 0), np.deg2rad(20), 0.0, np.deg2rad(20)).GetMatrix())
    flipped = rotation.reshape(3, 3) @ np.diag([-1.0, -1.0, 1.0])  # RAS-like axes, rotated ~20 deg twice
    image = sitk.Image((48, 48, 14), sitk.sitkFloat32)
    image.SetSpacing((0.8, 0.8, 3.0))
    image.SetDirection(flipped.ravel())
    image.SetOrigin((-10.0, 5.0, 20.0))
    z, y, x = np.indices(image.GetSize()[::-1])
    index = np.stack([x.ravel(), y.ravel(), z.ravel()]).astype(float)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    points = (
        direction @ (index * np.array(image.GetSpacing())[:, None]) + np.array(image.GetOrigin())[:, None]
    )
    centre = points.mean(axis=1, keepdims=True)
    radius = np.array([[12.0], [10.0], [14.0]])
    blob = (((points - centre) / radius) ** 2).sum(axis=0).reshape(z.shape) <= 1.0
    geometry = (image.GetSpacing(), image.GetOrigin(), image.GetDirection())
    return Volume(blob * 100.0 + 10.0, *geometry), Volume(blob.astype(np.uint8), *geometry)


def test_oblique_round_trip():
    image, labels = _oblique_volume()
    assert labels.array.sum() > 500
    model = to_model_space(labels, (1.5, 1.5, 1.5), is_label=True)
    rotation = sitk.Euler3DTransform((0, 0, 0), np.deg2rad(20), 0.0, np.deg2rad(20)).GetMatrix()
    assert model.direction == pytest.approx(rotation, abs=1e-9)  # flips undone, residual rotation kept
    back = to_input_grid(model, image)
    assert _geometry(back)[1:] == _geometry(image)[1:] and back.array.shape == image.array.shape
    assert _dice(back.array == 1, labels.array == 1) > 0.9
    model_image = to_model_space(image, (1.5, 1.5, 1.5))
    probs = np.stack([model_image.array / 110.0, 1.0 - model_image.array / 110.0])
    back_probs = probabilities_to_input_grid(probs, model_image, image)
    assert back_probs.shape == (2, *image.array.shape) and back_probs.dtype == np.float32
    assert _dice(back_probs[0] > 0.5, labels.array == 1) > 0.9
    with pytest.raises(InputError, match="model-space"):
        probabilities_to_input_grid(probs[:, :-1], model_image, image)


def test_bbox_crop_uncrop():
    array = np.zeros((10, 12, 14), np.float32)
    array[3:5, 4:9, 0:2] = 1.0
    bbox = foreground_bbox(array, margin=2)
    assert bbox == (slice(1, 7), slice(2, 11), slice(0, 4))
    cropped = crop(array, bbox)
    assert cropped.shape == (6, 9, 4)
    np.testing.assert_array_equal(uncrop(cropped, bbox, array.shape), array)
    channels = np.stack([array, 2 * array])
    restored = uncrop(crop(channels, bbox), bbox, array.shape, fill=0)
    np.testing.assert_array_equal(restored, channels)
    empty = np.zeros((3, 4, 5))
    assert crop(empty, foreground_bbox(empty)).shape == empty.shape


def test_reorient_of_an_lps_volume_equals_dicomorient(ct):
    """The no-copy path for identity-direction volumes gives what SimpleITK's DICOMOrient gives."""
    lps = reorient(ct[0])
    fast = reorient(lps)
    slow = Volume.from_sitk(sitk.DICOMOrient(lps.to_sitk(), CANONICAL_ORIENTATION))
    assert fast.array is lps.array
    assert _geometry(fast) == _geometry(slow)
    np.testing.assert_array_equal(fast.array, slow.array)


def _sphere_probabilities(grid: Volume, centre, radius: float) -> np.ndarray:
    """Background / sphere / shell probabilities ``[3, z, y, x]`` on ``grid`` (a soft edge of 2 mm)."""
    image = grid.to_sitk()
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in image.GetSize()], indexing="ij"), -1).reshape(-1, 3)
    direction = np.asarray(grid.direction).reshape(3, 3)
    points = np.asarray(grid.origin) + (idx * np.asarray(grid.spacing)) @ direction.T
    r = np.linalg.norm(points - np.asarray(centre), axis=1).reshape(image.GetSize()).transpose(2, 1, 0)
    inner = 1.0 / (1.0 + np.exp((r - radius) / 2.0))
    shell = 0.8 / (1.0 + np.exp((r - radius - 5.0) / 2.0)) * (1.0 - inner)
    return np.stack([1.0 - inner - shell, inner, shell]).astype(np.float32)


def test_labels_from_probabilities_follow_the_organ_border_on_a_finer_grid():
    """A sphere of radius 12 mm (and a shell around it) computed on an oblique 3 mm grid, returned to a 0.75 x 0.75 x 2.5 mm
    grid: the argmax of the linearly resampled probabilities is closer to the true sphere than the
    3 mm labels copied to the nearest voxels, and agrees with argmax of the full resampled channels."""
    coarse = Volume(np.zeros((20, 22, 24), np.float32), (3.0, 3.0, 3.0), (-30.0, -33.0, -30.0),
                    tuple(np.asarray(sitk.Euler3DTransform((0, 0, 0), 0.2, 0.0, 0.3).GetMatrix()).tolist()))
    fine = Volume(np.zeros((24, 80, 80), np.float32), (0.75, 0.75, 2.5), (-30.0, -30.0, -30.0), IDENTITY)
    centre = (0.0, 1.0, -2.0)
    probs = _sphere_probabilities(coarse, centre, 12.0)
    truth = _sphere_probabilities(fine, centre, 12.0).argmax(0)
    bbox = (slice(2, 19), slice(1, 21), slice(3, 23))
    region = (slice(0, 24), slice(4, 76), slice(0, 80))
    smooth = labels_from_probabilities(probs[(slice(None), *bbox)], coarse, bbox, fine, region)
    padded = np.zeros_like(probs)
    padded[0] = 1.0  # outside the crop: background, as the Segmenter fills it
    padded[(slice(None), *bbox)] = probs[(slice(None), *bbox)]
    full = probabilities_to_input_grid(padded, coarse, fine).argmax(0)[region]
    assert smooth.shape == (24, 72, 80) and smooth.dtype == np.uint8
    assert np.mean(smooth == full) > 0.999  # the channel-at-a-time argmax is the argmax (up to float ties)
    nearest = to_input_grid(Volume(padded.argmax(0).astype(np.uint8), coarse.spacing, coarse.origin, coarse.direction),
                            fine).array[region]
    for value in (1, 2):
        assert _dice(smooth == value, truth[region] == value) > _dice(nearest == value, truth[region] == value) + 0.05


def test_sub_grid_names_the_same_grid_points():
    image = Volume(np.arange(6 * 7 * 8, dtype=np.float32).reshape(6, 7, 8), (0.7, 1.1, 2.5), (3.0, -4.0, 5.0),
                   tuple(np.asarray(sitk.Euler3DTransform((0, 0, 0), 0.3, -0.2, 0.5).GetMatrix()).tolist()))
    box = (slice(1, 5), slice(2, 7), slice(3, 6))
    size, spacing, origin, direction = sub_grid(image, box)
    assert size == [3, 5, 4]
    ref = Volume(np.zeros((4, 5, 3), np.float32), spacing, origin, direction)
    np.testing.assert_array_equal(to_input_grid(image, ref).array, image.array[box])
