"""Item 5: ``mmseg phantom --out`` never writes into a folder that already holds a user's data set."""

from __future__ import annotations

from Testing.library.hostile.helpers import one_error, run, snapshot, write_scan


def test_existing_dataset_is_refused_untouched(tmp_path, capsys):
    data = tmp_path / "mydata"
    write_scan(data / "imagesTr" / "ct_000.nii.gz")
    (data / "dataset.json").write_text('{"name": "my real scans"}')
    before = snapshot(data)
    code, _, err = run(["phantom", "--out", data, "--ct", "1", "--mr", "1"], capsys)
    assert code == 1
    one_error(err, "mydata", "not empty")
    assert snapshot(data) == before


def test_new_or_empty_folder_is_written(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, out, err = run(["phantom", "--out", tmp_path / "empty", "--ct", "1", "--mr", "1"], capsys)
    assert code == 0, err
    assert (tmp_path / "empty" / "dataset.json").is_file()
