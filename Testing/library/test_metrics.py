"""Dice, HD95 and ASSD against independent numpy computations and shapes of known distance."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.ndimage import binary_erosion
from scipy.spatial.distance import cdist

from MultiModalSegLib.errors import InputError
from MultiModalSegLib.labels import ABDOMEN_LABELS, LabelInfo
from MultiModalSegLib.metrics import (
    case_name,
    evaluate_files,
    evaluate_folders,
    evaluate_labels,
    format_markdown_table,
    remap_labels,
)

A = LabelInfo(1, "a", (255, 0, 0))
B = LabelInfo(2, "b", (0, 255, 0))


def numpy_dice(p: np.ndarray, r: np.ndarray) -> float:
    return 2.0 * np.logical_and(p, r).sum() / (p.sum() + r.sum())


def surface_points_mm(mask: np.ndarray, spacing_xyz) -> np.ndarray:
    edge = mask & ~binary_erosion(mask)
    return np.argwhere(edge) * np.asarray(spacing_xyz[::-1], dtype=float)


def brute_force_distances(p: np.ndarray, r: np.ndarray, spacing_xyz) -> tuple[float, float]:
    d = cdist(surface_points_mm(p, spacing_xyz), surface_points_mm(r, spacing_xyz))
    pr, rp = d.min(axis=1), d.min(axis=0)
    hd95 = max(np.percentile(pr, 95), np.percentile(rp, 95))
    return float(hd95), float(np.concatenate([pr, rp]).mean())


def test_dice_matches_numpy():
    rng = np.random.default_rng(0)
    pred = rng.integers(0, 3, size=(6, 7, 8))
    ref = rng.integers(0, 3, size=(6, 7, 8))
    result = evaluate_labels(pred, ref, [A, B], (1.0, 1.0, 1.0))
    for lab in (A, B):
        assert result[lab.name]["dice"] == pytest.approx(numpy_dice(pred == lab.value, ref == lab.value), abs=1e-6)


def test_slabs_two_voxels_apart_anisotropic():
    # Two one-voxel-thick slabs across the whole volume, 2 voxels apart along x (spacing x = 2.5 mm):
    # every surface point is exactly 5 mm from the other slab.
    pred = np.zeros((5, 6, 10), dtype=np.uint8)
    ref = np.zeros_like(pred)
    pred[:, :, 3] = 1
    ref[:, :, 5] = 1
    result = evaluate_labels(pred, ref, [A], (2.5, 0.8, 3.0))["a"]
    assert result["dice"] == 0.0
    assert result["hd95"] == pytest.approx(5.0, abs=1e-5)
    assert result["assd"] == pytest.approx(5.0, abs=1e-5)


def test_slabs_offset_along_z_use_z_spacing():
    pred = np.zeros((10, 5, 6), dtype=np.uint8)
    ref = np.zeros_like(pred)
    pred[2] = 1
    ref[4] = 1
    result = evaluate_labels(pred, ref, [A], (0.5, 0.7, 3.0))["a"]
    assert result["hd95"] == pytest.approx(6.0, abs=1e-5)  # 2 voxels * 3 mm (z), not 2 * 0.5 (x)
    assert result["assd"] == pytest.approx(6.0, abs=1e-5)


def test_cubes_offset_match_brute_force():
    pred = np.zeros((12, 14, 16), dtype=np.uint8)
    ref = np.zeros_like(pred)
    pred[3:8, 4:9, 2:7] = 1
    ref[3:8, 4:9, 4:9] = 1  # 5-voxel cube shifted 2 voxels along x
    spacing = (2.0, 0.7, 1.5)
    result = evaluate_labels(pred, ref, [A], spacing)["a"]
    hd95, assd = brute_force_distances(pred == 1, ref == 1, spacing)
    assert result["dice"] == pytest.approx(0.6, abs=1e-6)
    assert result["hd95"] == pytest.approx(hd95, rel=1e-5)
    assert result["assd"] == pytest.approx(assd, rel=1e-5)
    assert result["hd95"] == pytest.approx(4.0, abs=1e-5)  # farthest faces: 2 voxels * 2 mm


def test_identical_masks():
    pred = np.zeros((6, 6, 6), dtype=np.int16)
    pred[1:4, 2:5, 1:5] = 2
    result = evaluate_labels(pred, pred.copy(), [B], (1.2, 1.2, 2.0))["b"]
    assert result == pytest.approx({"dice": 1.0, "hd95": 0.0, "assd": 0.0})


def test_absent_label_conventions():
    pred = np.zeros((4, 5, 6), dtype=np.uint8)
    ref = np.zeros_like(pred)
    pred[1:3, 1:3, 1:3] = 1  # label a only in the prediction; label b in neither
    result = evaluate_labels(pred, ref, [A, B], (1.0, 1.0, 1.0))
    assert result["a"]["dice"] == 0.0
    assert math.isnan(result["a"]["hd95"]) and math.isnan(result["a"]["assd"])
    assert all(math.isnan(v) for v in result["b"].values())
    ref_only = evaluate_labels(ref, pred, [A], (1.0, 1.0, 1.0))["a"]
    assert ref_only["dice"] == 0.0 and math.isnan(ref_only["hd95"])


def test_shape_mismatch():
    with pytest.raises(InputError, match="shape"):
        evaluate_labels(np.zeros((2, 2, 2)), np.zeros((2, 2, 3)), [A], (1, 1, 1))


def test_remap_labels():
    array = np.array([[0, 5, 1], [2, 3, 9]])
    out = remap_labels(array, {5: 1, 1: 2, 2: 3, 3: 4})
    np.testing.assert_array_equal(out, [[0, 1, 2], [3, 4, 0]])


@pytest.mark.parametrize(
    "name,case",
    [("c1.nii.gz", "c1"), ("c1.seg.nrrd", "c1"), ("c1.nrrd", "c1"), ("c1.nii", "c1"), ("notes.txt", None)],
)
def test_case_name(name, case):
    assert case_name(name) == case


# ----------------------------------------------------------------------------- files and folders


def write_label_image(path, array, spacing=(1.0, 1.0, 2.0)):
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))
    return path


def two_organ_maps(shift: int = 0) -> tuple[np.ndarray, np.ndarray]:
    pred = np.zeros((8, 10, 12), dtype=np.uint8)
    pred[2:6, 2:6, 1:5] = 1
    pred[2:6, 2:6, 7:11] = 2
    ref = np.roll(pred, shift, axis=2)
    return pred, ref


def test_evaluate_files_with_remap(tmp_path):
    pred, ref = two_organ_maps(shift=1)
    ref_ts = remap_labels(ref, {1: 5, 2: 1})  # the reference uses TotalSegmentator ids
    write_label_image(tmp_path / "p.nii.gz", pred)
    write_label_image(tmp_path / "r.nii.gz", ref_ts)
    result = evaluate_files(tmp_path / "p.nii.gz", tmp_path / "r.nii.gz", ABDOMEN_LABELS[:2], {5: 1, 1: 2})
    assert result["liver"]["dice"] == pytest.approx(numpy_dice(pred == 1, ref == 1), abs=1e-6)
    assert result["spleen"]["dice"] == pytest.approx(numpy_dice(pred == 2, ref == 2), abs=1e-6)


def test_evaluate_files_grid_mismatch_names_both(tmp_path):
    pred, ref = two_organ_maps()
    p = write_label_image(tmp_path / "p.nii.gz", pred)
    r = write_label_image(tmp_path / "r.nii.gz", ref, spacing=(1.0, 1.0, 3.0))
    with pytest.raises(InputError, match="differs") as info:
        evaluate_files(p, r, ABDOMEN_LABELS)
    assert str(p) in str(info.value) and str(r) in str(info.value)


def make_folders(tmp_path):
    pred_dir, ref_dir = tmp_path / "pred", tmp_path / "ref"
    pred_dir.mkdir()
    ref_dir.mkdir()
    for case, shift in (("case1", 0), ("case2", 1)):
        pred, ref = two_organ_maps(shift)
        write_label_image(pred_dir / f"{case}.nii.gz", pred)
        write_label_image(ref_dir / f"{case}.nrrd", ref)
    write_label_image(ref_dir / "case3.nii.gz", ref)  # reference without prediction: ignored
    return pred_dir, ref_dir


def test_evaluate_folders_writes_three_files(tmp_path):
    pred_dir, ref_dir = make_folders(tmp_path)
    labels = list(ABDOMEN_LABELS[:3])
    results = evaluate_folders(pred_dir, ref_dir, tmp_path / "out", labels)
    assert list(results) == ["case1", "case2"]
    assert results["case1"]["liver"]["dice"] == pytest.approx(1.0)
    assert results["case2"]["liver"]["dice"] < 1.0
    rows = list(csv.DictReader((tmp_path / "out" / "metrics.csv").open()))
    assert len(rows) == 6 and rows[0].keys() == {"case", "label", "dice", "hd95", "assd"}
    assert rows[2]["label"] == "kidney_right" and rows[2]["dice"] == "nan"
    doc = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert doc["cases"]["case2"]["spleen"]["dice"] == pytest.approx(results["case2"]["spleen"]["dice"])
    assert doc["cases"]["case1"]["kidney_right"]["dice"] is None
    mean_dice = (results["case1"]["liver"]["dice"] + results["case2"]["liver"]["dice"]) / 2
    assert doc["mean"]["liver"]["dice"] == pytest.approx(mean_dice)
    md = (tmp_path / "out" / "metrics.md").read_text()
    assert md.count("\n") == 2 + 2 + 1 and "| **mean** |" in md
    assert f"{mean_dice:.3f}" in md


def test_evaluate_folders_missing_reference(tmp_path):
    pred_dir, ref_dir = make_folders(tmp_path)
    (ref_dir / "case2.nrrd").unlink()
    with pytest.raises(InputError, match="case2"):
        evaluate_folders(pred_dir, ref_dir, tmp_path / "out", ABDOMEN_LABELS)


def test_markdown_table_mean_row_skips_nan():
    results = {
        "x": {"liver": {"dice": 0.5, "hd95": 2.0, "assd": 1.0}},
        "y": {"liver": {"dice": 0.7, "hd95": float("nan"), "assd": float("nan")}},
    }
    lines = format_markdown_table(results).strip().splitlines()
    assert lines[0] == "| case | liver Dice | liver HD95 mm | liver ASSD mm |"
    assert lines[3] == "| y | 0.700 | n/a | n/a |"
    assert lines[4] == "| **mean** | 0.600 | 2.00 | 1.00 |"
