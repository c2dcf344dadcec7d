"""Reading and writing images, label maps and Slicer segmentations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from MultiModalSegLib.errors import InputError
from MultiModalSegLib.io import (
    Volume,
    read_image,
    read_labelmap,
    read_segmentation_info,
    read_segmentation_names,
    write_labelmap,
    write_segmentation,
)
from MultiModalSegLib.labels import ABDOMEN_LABELS

DATA = Path(__file__).resolve().parents[2] / "Resources" / "SampleData"  # copies of ../shared/data
SPACING = (0.7, 0.9, 2.5)
ORIGIN = (-12.5, 30.25, 7.125)
DIRECTION = (0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)


def _image(array: np.ndarray, spacing=SPACING, origin=ORIGIN, direction=DIRECTION) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    return image


def _labels(shape=(6, 8, 10)) -> Volume:
    array = np.zeros(shape, np.uint8)
    array[1:4, 2:5, 3:7] = 1
    array[4:6, 5:8, 1:3] = 2
    return Volume(array, SPACING, ORIGIN, DIRECTION)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_round_trip_keeps_geometry(tmp_path, suffix):
    array = np.arange(6 * 7 * 8, dtype=np.int16).reshape(6, 7, 8)
    path = tmp_path / f"image{suffix}"
    sitk.WriteImage(_image(array), str(path))
    volume = read_image(path)
    np.testing.assert_array_equal(volume.array, array)
    assert volume.spacing == pytest.approx(SPACING, abs=1e-6)
    assert volume.origin == pytest.approx(ORIGIN, abs=1e-6)
    assert volume.direction == pytest.approx(DIRECTION, abs=1e-6)
    out = write_labelmap(
        Volume(array % 3, *(volume.spacing, volume.origin, volume.direction)), tmp_path / f"l{suffix}"
    )
    again = read_image(out)
    assert (again.spacing, again.origin, again.direction) == (volume.spacing, volume.origin, volume.direction)


def _write_dicom_series(folder: Path, array: np.ndarray, modality: str) -> None:
    spacing, origin = (0.8, 0.8, 2.0), (-20.0, 15.0, 100.0)
    volume = _image(array, spacing, origin, (1, 0, 0, 0, 1, 0, 0, 0, 1))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for z in range(array.shape[0]):
        slice_ = volume[:, :, z]
        position = volume.TransformIndexToPhysicalPoint((0, 0, z))
        tags = {
            "0008|0060": modality,
            "0008|0016": "1.2.840.10008.5.1.4.1.1.2",
            "0008|0018": f"1.2.826.0.1.3680043.2.1125.1.{z + 1}",
            "0020|000d": "1.2.826.0.1.3680043.2.1125.2",
            "0020|000e": "1.2.826.0.1.3680043.2.1125.3",
            "0020|0013": str(z + 1),
            "0020|0032": "\\".join(f"{p:.4f}" for p in position),
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0018|0050": "2.0",
        }
        for key, value in tags.items():
            slice_.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"slice{z:03d}.dcm"))
        writer.Execute(slice_)


def test_dicom_series(tmp_path):
    array = (np.arange(5 * 6 * 7, dtype=np.int16).reshape(5, 6, 7) - 100).astype(np.int16)
    _write_dicom_series(tmp_path, array, "CT")
    volume = read_image(tmp_path)
    assert volume.modality_tag == "CT"
    np.testing.assert_array_equal(volume.array, array)
    assert volume.spacing == pytest.approx((0.8, 0.8, 2.0), abs=1e-4)
    assert volume.origin == pytest.approx((-20.0, 15.0, 100.0), abs=1e-4)
    assert volume.direction == pytest.approx((1, 0, 0, 0, 1, 0, 0, 0, 1), abs=1e-6)


def test_empty_folder_is_input_error(tmp_path):
    with pytest.raises(InputError, match="no DICOM series"):
        read_image(tmp_path)


def _assert_input_error(path: Path, fragment: str) -> None:
    with pytest.raises(InputError) as info:
        read_image(path)
    assert str(path) in str(info.value)
    assert fragment in str(info.value)


def test_2d_image(tmp_path):
    path = tmp_path / "slice.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((8, 9), np.float32)), str(path))
    _assert_input_error(path, "is 2D")


def test_4d_image(tmp_path):
    path = tmp_path / "series.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((2, 3, 4, 5), np.float32), isVector=False), str(path))
    _assert_input_error(path, "is 4D")


def test_multicomponent_image(tmp_path):
    path = tmp_path / "rgb.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((3, 4, 5, 3), np.uint8), isVector=True), str(path))
    _assert_input_error(path, "components")


@pytest.mark.parametrize("suffix", [".nrrd", ".nii.gz"])
def test_all_nan_image(tmp_path, suffix):
    # NIfTI: SimpleITK's reader turns NaN into 0, so the stored values are checked with nibabel
    path = tmp_path / f"nan{suffix}"
    sitk.WriteImage(sitk.GetImageFromArray(np.full((3, 4, 5), np.nan, np.float32)), str(path))
    _assert_input_error(path, "every voxel is NaN")


def test_some_nan_image(tmp_path):
    array = np.zeros((3, 4, 5), np.float32)
    array[0, 0, :3] = np.nan
    array[1, 1, 1] = np.inf
    path = tmp_path / "some_nan.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
    _assert_input_error(path, "4 of 60")


def test_missing_and_unreadable(tmp_path):
    _assert_input_error(tmp_path / "absent.nii.gz", "no such file")
    junk = tmp_path / "junk.nii.gz"
    junk.write_bytes(b"not an image")
    _assert_input_error(junk, "not a readable image")


def test_labelmap_grid_mismatch(tmp_path):
    labels = _labels()
    path = write_labelmap(labels, tmp_path / "labels.nii.gz")
    assert read_labelmap(path, labels).array.dtype == np.uint8
    moved = Volume(labels.array, SPACING, (ORIGIN[0] + 1.0, ORIGIN[1], ORIGIN[2]), DIRECTION)
    with pytest.raises(InputError) as info:
        read_labelmap(path, moved, reference_name="image.nii.gz")
    message = str(info.value)
    assert str(path) in message and "image.nii.gz" in message and "resample" in message
    assert "-11.5" in message and "-12.5" in message


def test_labelmap_non_integer(tmp_path):
    path = tmp_path / "prob.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.full((3, 4, 5), 0.5, np.float32)), str(path))
    with pytest.raises(InputError, match="non-integer"):
        read_labelmap(path)
    whole = tmp_path / "whole.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.full((3, 4, 5), 2.0, np.float32)), str(whole))
    assert read_labelmap(whole).array.dtype == np.uint8


def test_seg_nrrd_round_trip(tmp_path):
    labels = _labels()
    labels.array[0, 0, 0] = 7  # a value without a definition still becomes a segment
    path = write_segmentation(labels, tmp_path / "out.seg.nrrd", list(ABDOMEN_LABELS))
    assert read_segmentation_names(path) == {
        1: "liver",
        2: "spleen",
        3: "kidney_right",
        4: "kidney_left",
        7: "label_7",
    }
    info = {lab.value: lab for lab in read_segmentation_info(path)}
    assert info[1].color == (221, 130, 101) and info[1].snomed == "10200004"
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    assert reader.GetMetaData("Segmentation_MasterRepresentation") == "Binary labelmap"
    assert reader.GetMetaData("Segment0_Extent") == "3 6 2 4 1 3"
    assert reader.GetMetaData("Segment2_Extent") == "0 -1 0 -1 0 -1"
    assert "SCT^10200004^" in reader.GetMetaData("Segment0_Tags")
    back = read_image(path)
    np.testing.assert_array_equal(back.array, labels.array)
    assert back.spacing == pytest.approx(SPACING, abs=1e-9)
    assert back.origin == pytest.approx(ORIGIN, abs=1e-9)
    assert back.direction == pytest.approx(DIRECTION, abs=1e-9)


@pytest.mark.parametrize("name", ["out.nii.gz", "out.nii", "out.nrrd"])
def test_plain_segmentation_and_no_overwrite(tmp_path, name):
    labels = _labels()
    path = write_segmentation(labels, tmp_path / name, ABDOMEN_LABELS)
    back = read_image(path)
    assert back.array.dtype == np.uint8
    np.testing.assert_array_equal(back.array, labels.array)
    with pytest.raises(InputError, match="exists"):
        write_segmentation(labels, path, ABDOMEN_LABELS)
    write_segmentation(labels, path, ABDOMEN_LABELS, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_segmentation_bad_suffix(tmp_path):
    with pytest.raises(InputError, match="unknown output format"):
        write_segmentation(_labels(), tmp_path / "out.png", ABDOMEN_LABELS)


def test_real_ct_reads():
    volume = read_image(DATA / "abdomen_ct_01" / "image.nii.gz")
    assert volume.size == (122, 101, 112)
    labels = read_labelmap(DATA / "abdomen_ct_01" / "label_totalseg.nii.gz", volume)
    assert labels.array.max() > 5
