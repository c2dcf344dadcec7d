"""Item 7: every input gets its own output: same file names in different folders, dotted names and
their probability files, and a folder of case folders (named by case folder)."""

from __future__ import annotations

import SimpleITK as sitk

from Testing.library.hostile.helpers import TINY, ct_array, run, snapshot, write_scan


def test_same_file_name_in_two_folders_gives_two_outputs(tmp_path, capsys):
    a = write_scan(tmp_path / "a" / "image.nii.gz", ct_array(0))
    b = write_scan(tmp_path / "b" / "image.nii.gz", ct_array(0, shape=(24, 40, 40)))
    out = tmp_path / "out"
    code, stdout, err = run(["segment", a, b, "--model", TINY, "-o", out], capsys)
    assert code == 0, err
    assert "skipped" not in stdout
    assert sorted(snapshot(out)) == ["a_image.seg.nrrd", "b_image.seg.nrrd"]
    assert sitk.ReadImage(str(out / "b_image.seg.nrrd")).GetSize() == (40, 40, 24)  # b's result, on b's grid
    # a rerun finds both finished and replaces neither
    before = snapshot(out)
    code, stdout, _ = run(["segment", a, b, "--model", TINY, "-o", out], capsys)
    assert code == 0 and stdout.count("skipped") == 2 and snapshot(out) == before


def test_dotted_names_keep_their_own_probability_files(tmp_path, capsys):
    one = write_scan(tmp_path / "patient.1.nii.gz", ct_array(1))
    two = write_scan(tmp_path / "patient.2.nii.gz", ct_array(2))
    out = tmp_path / "out"
    code, _, err = run(["segment", one, two, "--model", TINY, "-o", out, "--probabilities"], capsys)
    assert code == 0, err
    assert sorted(snapshot(out)) == [
        "patient.1.seg.nrrd", "patient.1_probabilities.nii.gz", "patient.2.seg.nrrd", "patient.2_probabilities.nii.gz",
    ]  # fmt: skip


def test_folder_of_case_folders_is_named_by_case(tmp_path, capsys):
    cases = tmp_path / "cases"
    write_scan(cases / "case_01" / "image.nii.gz", ct_array(1))
    write_scan(cases / "case_02" / "image.nii.gz", ct_array(2))
    code, _, err = run(["segment", cases, "--model", TINY, "-o", tmp_path / "out", "--format", "nii.gz"], capsys)
    assert code == 0, err
    assert "GDCM" not in err
    assert sorted(snapshot(tmp_path / "out")) == ["case_01.nii.gz", "case_02.nii.gz"]
