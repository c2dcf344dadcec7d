"""Item 3: a DICOM series with a missing slice or an unreadable file is refused, not segmented with
wrong geometry."""

from __future__ import annotations

from Testing.library.hostile.helpers import TINY, one_error, run, snapshot, write_dicom_series

UID = "1.2.826.0.1.3680043.2.1125.100"


def test_missing_slice_is_refused(tmp_path, capsys):
    files = write_dicom_series(tmp_path / "series", UID)
    files[4].unlink()
    before = snapshot(tmp_path / "series")
    code, _, err = run(["segment", tmp_path / "series", "--model", TINY, "-o", tmp_path / "out"], capsys)
    assert code == 1
    one_error(err, "series", "not evenly spaced", "missing")
    assert not (tmp_path / "out").exists() and snapshot(tmp_path / "series") == before


def test_unreadable_slice_is_refused(tmp_path, capsys):
    files = write_dicom_series(tmp_path / "series", UID)
    files[-1].write_bytes(files[-1].read_bytes()[:300])  # the last slice: no gap, but a file left unread
    code, _, err = run(["segment", tmp_path / "series", "--model", TINY, "-o", tmp_path / "out"], capsys)
    assert code == 1
    one_error(err, "series", "cannot be read", files[-1].name)
    assert not (tmp_path / "out").exists()


def test_complete_series_is_segmented_on_its_grid(tmp_path, capsys):
    write_dicom_series(tmp_path / "series", UID)
    code, _, err = run(["segment", tmp_path / "series", "--model", TINY, "-o", tmp_path / "out"], capsys)
    assert code == 0, err
    assert list(snapshot(tmp_path / "out")) == ["series.seg.nrrd"]
