"""Item 13: training data that would be quietly wrong: label values outside a (reordered) label
table, a label map holding only background, a NIfTI whose header gives voxel spacing 0."""

from __future__ import annotations

import json
import shutil
import struct

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import tiny_config

from MultiModalSegLib.data.dataset import Case
from MultiModalSegLib.data.loading import prepare_case
from Testing.library.hostile.helpers import TINY, one_error, run, write_scan

REORDERED = {"0": "background", "1": "spleen", "2": "liver", "3": "kidney_right", "4": "kidney_left"}


def _dataset(tmp_path, phantom_dir, labels):
    data = tmp_path / "data"
    shutil.copytree(phantom_dir / "imagesTr", data / "imagesTr")
    shutil.copytree(phantom_dir / "labelsTr", data / "labelsTr")
    spec = json.loads((phantom_dir / "dataset.json").read_text())
    spec["labels"] = labels
    (data / "dataset.json").write_text(json.dumps(spec))
    return data


def test_stray_label_value_with_a_reordered_table_is_refused(tmp_path, capsys, phantom_dir):
    data = _dataset(tmp_path, phantom_dir, REORDERED)
    label_file = data / "labelsTr" / "ct_000.nii.gz"
    label = sitk.ReadImage(str(label_file))
    array = sitk.GetArrayFromImage(label)
    array[:2, :2, :2] = 7  # a value the label table does not list
    stray = sitk.GetImageFromArray(array)
    stray.CopyInformation(label)
    sitk.WriteImage(stray, str(label_file))
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(tiny_config(data, steps=1)))
    code, _, err = run(["train", "--config", config, "--out", tmp_path / "run", "--quiet"], capsys)
    assert code == 1
    one_error(err, "ct_000.nii.gz", "[7]", "label table")
    assert not (tmp_path / "run" / "bundle").exists()


def test_all_background_label_is_warned_about(tmp_path, phantom_dir):
    label = write_scan(tmp_path / "empty_label.nii.gz", np.zeros((20, 40, 40), np.uint8))
    image = write_scan(tmp_path / "image.nii.gz")
    case = Case("c", image, "CT", label, {1: 2, 2: 1}, remap_is_table=True)
    with pytest.warns(UserWarning, match="only background"):
        prepare_case(case, [6.0, 6.0, 6.0], [1, 2, 3, 4])


def test_zero_voxel_spacing_is_refused(tmp_path, capsys):
    scan = write_scan(tmp_path / "nospacing.nii")
    data = bytearray(scan.read_bytes())
    data[80:92] = struct.pack("<3f", 0.0, 0.0, 0.0)  # pixdim[1..3]
    scan.write_bytes(bytes(data))
    code, _, err = run(["segment", scan, "--model", TINY, "-o", tmp_path / "out"], capsys)
    assert code == 1
    one_error(err, "nospacing.nii", "spacing")
    assert not (tmp_path / "out").exists()
