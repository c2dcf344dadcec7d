"""Synthetic abdominal phantoms: determinism, anatomy in LPS space, intensities, dataset writing."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from MultiModalSegLib.cli import phantom as phantom_cli
from MultiModalSegLib.data import phantoms
from MultiModalSegLib.data.phantoms import (
    LPS_DIRECTION,
    RAS_DIRECTION,
    TISSUES,
    generate_phantom,
    generate_tissue_map,
    write_phantom_dataset,
)
from MultiModalSegLib.errors import InputError
from MultiModalSegLib.io import Volume, read_image

LIVER, SPLEEN, KIDNEY_R, KIDNEY_L = 1, 2, 3, 4
VOLUME_ML = {LIVER: (1000, 2500), SPLEEN: (100, 400), KIDNEY_R: (100, 250), KIDNEY_L: (100, 250)}


@pytest.fixture(scope="module")
def cases() -> dict[tuple[str, int], tuple[Volume, Volume]]:
    return {(m, s): generate_phantom(m, s) for m in ("CT", "MR") for s in (0, 1)}


def physical_centroid(label: Volume, value: int) -> np.ndarray:
    idx = np.argwhere(label.array == value)[:, ::-1].mean(axis=0)  # (x, y, z) index
    direction = np.asarray(label.direction).reshape(3, 3)
    return np.asarray(label.origin) + direction @ (np.asarray(label.spacing) * idx)


def volume_ml(label: Volume, value: int) -> float:
    return float((label.array == value).sum() * np.prod(label.spacing) / 1000.0)


def test_same_seed_same_output_case_insensitive(cases):
    image, label = generate_phantom("ct", 0)
    ref_image, ref_label = cases[("CT", 0)]
    assert image.same_grid(ref_image)
    np.testing.assert_array_equal(image.array, ref_image.array)
    np.testing.assert_array_equal(label.array, ref_label.array)


def test_different_seeds_differ(cases):
    a, b = cases[("CT", 0)][0], cases[("CT", 1)][0]
    assert a.array.shape != b.array.shape or not np.array_equal(a.array, b.array)


@pytest.mark.parametrize("bad", ["PET", "", "ctx"])
def test_unknown_modality_is_named(bad):
    with pytest.raises(InputError, match=f"'{bad}'.*CT, MR"):
        generate_phantom(bad, 0)


def test_bad_seed_and_direction_rejected():
    with pytest.raises(InputError, match="seed"):
        generate_phantom("CT", -1)
    with pytest.raises(InputError, match="direction"):
        generate_phantom("CT", 0, direction=(0, 1, 0, 1, 0, 0, 0, 0, 1))


@pytest.mark.parametrize("key", [("CT", 0), ("CT", 1), ("MR", 0), ("MR", 1)])
def test_labels_present_with_plausible_volumes(cases, key):
    image, label = cases[key]
    assert label.array.dtype == np.uint8 and image.array.dtype == np.int16
    assert image.same_grid(label, tol=0)
    assert set(np.unique(label.array)) == {0, 1, 2, 3, 4}
    for value, (low, high) in VOLUME_ML.items():
        assert low <= volume_ml(label, value) <= high, (key, value, volume_ml(label, value))


@pytest.mark.parametrize("key", [("CT", 0), ("MR", 1)])
def test_grid_limits(cases, key):
    image = cases[key][0]
    nx, ny, nz = image.size
    sx, sy, sz = image.spacing
    assert nx <= 220 and ny <= 220 and nz <= 130
    assert 1.5 <= sx <= 3.0 and sx == sy and 2.0 <= sz <= 5.0
    assert 310 <= nx * sx <= 425 and 150 <= nz * sz <= 310
    assert image.direction in (LPS_DIRECTION, RAS_DIRECTION)


@pytest.mark.parametrize("key", [("CT", 0), ("CT", 1), ("MR", 0), ("MR", 1)])
def test_anatomy_sides_in_lps(cases, key):
    label = cases[key][1]
    liver, spleen = physical_centroid(label, LIVER), physical_centroid(label, SPLEEN)
    right, left = physical_centroid(label, KIDNEY_R), physical_centroid(label, KIDNEY_L)
    assert liver[0] < 0 < spleen[0]  # +x is the patient's left
    assert right[0] < 0 < left[0]
    assert right[1] > liver[1] and left[1] > liver[1]  # kidneys posterior (+y) to the liver
    assert spleen[2] > min(right[2], left[2])  # spleen superior (+z) to the kidneys' centres


def test_same_anatomy_for_both_stored_orientations():
    lps_image, lps_label = generate_phantom("CT", 2, direction=LPS_DIRECTION)
    ras_image, ras_label = generate_phantom("CT", 2, direction=RAS_DIRECTION)
    assert lps_image.direction == LPS_DIRECTION and ras_image.direction == RAS_DIRECTION
    assert ras_image.same_grid(ras_label, tol=0)
    assert not np.allclose(lps_image.origin, ras_image.origin)
    for value in (LIVER, SPLEEN, KIDNEY_R, KIDNEY_L):
        np.testing.assert_allclose(physical_centroid(lps_label, value), physical_centroid(ras_label, value), atol=1e-6)
    np.testing.assert_array_equal(lps_image.array, ras_image.array[:, ::-1, ::-1])
    # Physical point -> SimpleITK index gives the same tissue in both images.
    point = tuple(float(v) for v in physical_centroid(lps_label, LIVER))
    i_lps = lps_label.to_sitk().TransformPhysicalPointToIndex(point)
    i_ras = ras_label.to_sitk().TransformPhysicalPointToIndex(point)
    assert lps_label.array[i_lps[::-1]] == ras_label.array[i_ras[::-1]] == LIVER


def test_natural_orientations_and_fields_of_view_vary():
    directions, spacings = set(), set()
    for seed in range(12):
        rng = np.random.default_rng(seed)
        anat = phantoms._sample_anatomy(rng)
        acq = phantoms._sample_acquisition(anat, rng, None)
        directions.add(acq.direction)
        spacings.add(round(float(acq.xs[1] - acq.xs[0]), 3))
        assert len(acq.xs) <= 220 and len(acq.ys) <= 220 and len(acq.zs) <= 130
        extent = acq.zs[-1] - acq.zs[0]
        assert 150 <= extent <= 310
    assert directions == {LPS_DIRECTION, RAS_DIRECTION}
    assert len(spacings) > 6


def tissue_values(image: Volume, tissues: Volume, name: str) -> np.ndarray:
    """Intensities of a tissue away from its borders (no partial volume)."""
    core = ndimage.binary_erosion(tissues.array == TISSUES.index(name), iterations=1)
    return image.array[core].astype(np.float64)


def test_ct_hounsfield_units(cases):
    image, label = cases[("CT", 0)]
    tissues = generate_tissue_map("CT", 0)
    assert tissues.same_grid(image, tol=0)
    liver = image.array[label.array == LIVER].mean()
    assert 40 <= liver <= 140
    assert -1030 <= tissue_values(image, tissues, "air").mean() <= -970
    assert -140 <= tissue_values(image, tissues, "fat").mean() <= -60
    assert 20 <= tissue_values(image, tissues, "muscle").mean() <= 75
    assert tissue_values(image, tissues, "cortical_bone").mean() >= 300
    assert tissue_values(image, tissues, "gas").mean() <= -500
    assert 5 <= tissue_values(image, tissues, "muscle").std() <= 45  # noise and texture


@pytest.mark.parametrize("seed", [0, 1])
def test_mr_contrast(cases, seed):
    image, label = cases[("MR", seed)]
    tissues = generate_tissue_map("MR", seed)
    data = image.array.astype(np.float64)
    assert data.min() >= 0
    liver, spleen = data[label.array == LIVER].mean(), data[label.array == SPLEEN].mean()
    kidney = data[label.array == KIDNEY_L].mean()
    fat, muscle = tissue_values(image, tissues, "fat").mean(), tissue_values(image, tissues, "muscle").mean()
    air = tissue_values(image, tissues, "air").mean()
    assert liver < spleen and liver < kidney
    assert fat > muscle and air < 0.2 * muscle


def test_write_dataset(tmp_path):
    path = write_phantom_dataset(tmp_path / "ds", n_ct=2, n_mr=1, seed=3, n_validation=1)
    assert path == tmp_path / "ds" / "dataset.json"
    data = json.loads(path.read_text())
    assert data["name"] == "abdomen-phantoms" and data["licence"] == "CC0-1.0"
    assert "seed 3" in data["description"]
    assert data["labels"] == {"0": "background", "1": "liver", "2": "spleen", "3": "kidney_right", "4": "kidney_left"}
    assert data["training"] == [{"image": "imagesTr/ct_000.nii.gz", "label": "labelsTr/ct_000.nii.gz", "modality": "CT"}]
    assert [c["image"] for c in data["validation"]] == ["imagesTr/ct_001.nii.gz", "imagesTr/mr_000.nii.gz"]
    assert [c["modality"] for c in data["validation"]] == ["CT", "MR"] and data["test"] == []
    arrays = []
    for case in data["training"] + data["validation"]:
        image = sitk.ReadImage(str(path.parent / case["image"]))
        label = sitk.ReadImage(str(path.parent / case["label"]))
        assert image.GetSize() == label.GetSize()
        assert np.allclose(image.GetSpacing(), label.GetSpacing(), atol=1e-6)
        assert np.allclose(image.GetOrigin(), label.GetOrigin(), atol=1e-6)
        assert image.GetDirection() == label.GetDirection()
        assert label.GetPixelID() == sitk.sitkUInt8
        assert set(np.unique(sitk.GetArrayViewFromImage(label))) == {0, 1, 2, 3, 4}
        arrays.append(read_image(path.parent / case["image"]).array)
    assert arrays[0].shape != arrays[1].shape or not np.array_equal(arrays[0], arrays[1])  # two patients
    leftovers = [p.name for p in (tmp_path / "ds").rglob("*") if p.name.startswith(".")]
    assert leftovers == []


def test_dataset_patients_are_unpaired():
    seeds = {phantoms.patient_seed(0, m, i) for m in ("CT", "MR") for i in range(20)}
    assert len(seeds) == 40


@pytest.mark.parametrize(
    ("n_ct", "n_mr", "n_val", "match"),
    [(0, 0, 0, "at least one"), (1, 2, 2, "n_validation=2 exceeds n_ct=1"), (-1, 1, 0, "n_ct")],
)
def test_write_dataset_bad_counts(tmp_path, n_ct, n_mr, n_val, match):
    with pytest.raises(InputError, match=match):
        write_phantom_dataset(tmp_path, n_ct, n_mr, n_validation=n_val)


def test_cli_phantom(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="mmseg")
    phantom_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["phantom", "--out", str(tmp_path / "out"), "--ct", "1", "--mr", "1", "--seed", "5"])
    assert args.func(args) == 0
    json_path = tmp_path / "out" / "dataset.json"
    assert str(json_path) in capsys.readouterr().out
    data = json.loads(json_path.read_text())
    assert [c["modality"] for c in data["training"]] == ["CT", "MR"]
    assert all((json_path.parent / c["label"]).is_file() for c in data["training"])


def test_cli_rejects_negative_count(tmp_path):
    parser = argparse.ArgumentParser(prog="mmseg")
    phantom_cli.register(parser.add_subparsers(dest="command"))
    with pytest.raises(SystemExit):
        parser.parse_args(["phantom", "--out", str(tmp_path), "--ct", "-1"])
