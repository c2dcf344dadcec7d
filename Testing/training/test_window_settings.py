"""``training/window_settings.py``: settings parsed from the command line, and a run that scores a bundle
under two sliding-window settings on a scan it never trained on, with the spread between them."""

from __future__ import annotations

import argparse
import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from Testing.conftest import load_script


@pytest.fixture(scope="module")
def ws():
    return load_script("training/window_settings.py")


def test_a_setting_names_quality_fields_with_their_types(ws):
    assert ws.named_setting("normal=") == ("normal", {})
    assert ws.named_setting("w2=window_scale:2,overlap:0.25,mode:constant") == (
        "w2", {"window_scale": 2, "overlap": 0.25, "mode": "constant"})
    assert ws.named_setting("fine-size=spacing_scale:0.9,organ_layout:0") == ("fine-size", {"spacing_scale": 0.9, "organ_layout": 0})
    for bad, says in (("w2", "NAME=KEY:VALUE"), ("=overlap:0.5", "NAME=KEY:VALUE"), ("w=size:2", "unknown key 'size'"),
                      ("w=window_scale:two", "window_scale takes a int")):
        with pytest.raises(argparse.ArgumentTypeError, match=says):
            ws.named_setting(bad)


def test_a_run_scores_each_setting_and_their_spread(ws, tiny_bundle, phantom_dir, tmp_path):
    scan = tmp_path / "data" / "chest_abdomen_ct_02"
    scan.mkdir(parents=True)
    shutil.copy(phantom_dir / "imagesTr" / "ct_000.nii.gz", scan / "image.nii.gz")
    label = nib.load(phantom_dir / "labelsTr" / "ct_000.nii.gz")  # abdomen values renumbered as TotalSegmentator's
    ids = np.asarray(label.dataobj).astype(np.uint8)
    nib.save(nib.Nifti1Image(np.select([ids == 1, ids == 2], [5, 1], 0).astype(np.uint8), label.affine), scan / "label_totalseg.nii.gz")
    out = tmp_path / "out"
    assert ws.main(["--bundle", str(tiny_bundle), "--setting", "normal=", "--setting", "flat=overlap:0.0,mode:constant,organ_layout:0",
                    "--data", str(tmp_path / "data"), "--out", str(out)]) == 0
    (row,) = json.loads((out / "window_settings.json").read_text())
    by = row["dice"]["chest_abdomen_ct_02"]
    assert not any(np.isnan(d[o]) for d in by.values() for o in d)  # both organs present in the reference
    assert set(by) == {"normal", "flat"} and set(by["normal"]) == {"liver", "spleen"}
    for organ in ("liver", "spleen"):
        assert row["spread"]["chest_abdomen_ct_02"][organ] == pytest.approx(abs(by["normal"][organ] - by["flat"][organ]), abs=1e-4)
    text = (out / "window_settings.md").read_text()
    assert "--setting normal= --setting flat=overlap:0.0,mode:constant,organ_layout:0" in text
    assert f"| `{row['model']}` | chest_abdomen_ct_02 | spleen | {by['normal']['spleen']:.3f} | {by['flat']['spleen']:.3f} |" in text


def test_organs_dropped_as_out_of_place_are_listed_under_the_table(ws):
    from training.real_scans import REAL_SCANS

    row = {"model": "m 1.0", "dice": {"chest_abdomen_ct_02": {"layout": {"liver": 0.9, "spleen": 0.7},
                                                              "size": {"liver": 0.9, "spleen": 0.0}}},
           "spread": {"chest_abdomen_ct_02": {"liver": 0.0, "spleen": 0.7}}, "out_of_place": {"chest_abdomen_ct_02": {}}}
    assert "out of place" not in ws.markdown([row], ["layout", "size"], REAL_SCANS)
    row["out_of_place"]["chest_abdomen_ct_02"]["layout"] = ["spleen", "kidney_left"]
    text = ws.markdown([row], ["layout", "size"], REAL_SCANS)
    assert "| `m 1.0` | chest_abdomen_ct_02 | spleen | 0.700 | 0.000 | 0.700 |" in text
    assert text.endswith("out of place (the organ layout): `m 1.0` chest_abdomen_ct_02 layout: spleen, kidney_left.")
