"""Item 2: a truncated NIfTI (a half-copied file) is refused with one sentence, never read zero-filled."""

from __future__ import annotations

import numpy as np
import pytest

from Testing.library.hostile.helpers import TINY, ct_array, one_error, run, write_scan


@pytest.mark.parametrize(
    "name, array",
    [
        ("int.nii", ct_array()),
        ("int.nii.gz", ct_array()),
        ("float.nii.gz", ct_array().astype(np.float32)),
    ],
)
def test_truncated_nifti_is_refused(tmp_path, capsys, name, array):
    scan = write_scan(tmp_path / name, array)
    data = scan.read_bytes()
    scan.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    code, _, err = run(["segment", scan, "--model", TINY, "-o", out], capsys)
    assert code == 1
    one_error(err, name, "truncated")
    assert not out.exists()  # nothing written, not even an empty folder
