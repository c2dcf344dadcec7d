"""Item 4: a DICOM folder holding several series lists them and asks which; ``--series UID`` picks
one, ``--series all`` writes one output per series."""

from __future__ import annotations

from Testing.library.hostile.helpers import TINY, one_error, run, snapshot, write_dicom_series

CT_UID = "1.2.826.0.1.3680043.2.1125.201"
MR_UID = "1.2.826.0.1.3680043.2.1125.202"


def two_series(folder):
    write_dicom_series(folder, CT_UID, prefix="ct")
    write_dicom_series(folder, MR_UID, modality="MR", slices=8, prefix="mr")
    return folder


def test_several_series_are_listed_and_nothing_is_segmented(tmp_path, capsys):
    folder = two_series(tmp_path / "study")
    code, _, err = run(["segment", folder, "--model", TINY, "-o", tmp_path / "out"], capsys)
    assert code == 1
    one_error(err, "study", "2 DICOM series", CT_UID, MR_UID, "--series")
    assert "model:" not in err  # refused before the model was loaded
    assert not (tmp_path / "out").exists()


def test_series_option_picks_one_or_all(tmp_path, capsys):
    folder = two_series(tmp_path / "study")
    code, out, err = run(["segment", folder, "--series", MR_UID, "--model", TINY, "-o", tmp_path / "one"], capsys)
    assert code == 0, err
    assert "MR (DICOM" in out and list(snapshot(tmp_path / "one")) == ["study.seg.nrrd"]

    code, out, err = run(["segment", folder, "--series", "all", "--model", TINY, "-o", tmp_path / "all"], capsys)
    assert code == 0, err
    assert sorted(snapshot(tmp_path / "all")) == [f"study_{CT_UID}.seg.nrrd", f"study_{MR_UID}.seg.nrrd"]

    code, _, err = run(["segment", folder, "--series", "1.2.3", "--model", TINY, "-o", tmp_path / "x"], capsys)
    assert code == 1
    one_error(err, "no DICOM series 1.2.3", CT_UID)
