"""Item 6: an output that would replace an input scan is refused before any work, even with --overwrite."""

from __future__ import annotations

from Testing.library.hostile.helpers import TINY, one_error, run, snapshot, write_scan


def test_output_folder_equal_to_input_folder_never_replaces_the_scan(tmp_path, capsys):
    folder = tmp_path / "scans"
    write_scan(folder / "ct.nii.gz")
    before = snapshot(folder)
    code, _, err = run(["segment", folder, "-o", folder, "--format", "nii.gz", "--overwrite", "--model", TINY], capsys)
    assert code == 1
    one_error(err, "ct.nii.gz", "would replace the input")
    assert "model:" not in err  # refused before the model loads
    assert snapshot(folder) == before
