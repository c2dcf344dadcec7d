import numpy as np
import pytest
import SimpleITK as sitk
from conftest import REAL_CT, REAL_MR

from MultiModalSegLib.cli import main
from MultiModalSegLib.io import read_image, read_segmentation_names


def run(args, capsys):
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.slow
def test_segments_several_inputs_with_one_model_load(tiny_bundle, tmp_path, capsys):
    code, out, _ = run(["segment", str(REAL_CT), str(REAL_MR), "--model", str(tiny_bundle), "-o", str(tmp_path / "a"), "--format", "nii.gz"], capsys)
    # both inputs are named image.nii.gz: each output is prefixed by its folder, neither replaces the other
    assert code == 0 and "skipped" not in out
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["abdomen_ct_01_image.nii.gz", "abdomen_mr_01_image.nii.gz"]
    folder = tmp_path / "in"
    folder.mkdir()
    for name, src in (("ct", REAL_CT), ("mr", REAL_MR)):
        (folder / f"{name}.nii.gz").write_bytes(src.read_bytes())
    code, out, err = run(["segment", str(folder), "--model", str(tiny_bundle), "-o", str(tmp_path / "b")], capsys)
    assert code == 0, err
    assert err.count("model:") == 1
    written = sorted(p.name for p in (tmp_path / "b").iterdir())
    assert written == ["ct.seg.nrrd", "mr.seg.nrrd"]
    assert set(read_segmentation_names(tmp_path / "b" / "ct.seg.nrrd").values()) <= {"liver", "spleen", "kidney_right", "kidney_left"}
    seg = read_image(tmp_path / "b" / "ct.seg.nrrd")
    ref = read_image(folder / "ct.nii.gz")
    assert seg.spacing == ref.spacing and seg.origin == ref.origin and seg.direction == ref.direction
    # a rerun skips finished cases and never overwrites silently
    code, out, _ = run(["segment", str(folder), "--model", str(tiny_bundle), "-o", str(tmp_path / "b")], capsys)
    assert code == 0 and out.count("skipped") == 2


def test_list_file_and_probabilities(tiny_bundle, tmp_path, capsys):
    listing = tmp_path / "cases.txt"
    listing.write_text(f"# one case\n{REAL_MR}\n")
    code, out, err = run(["segment", str(listing), "--model", str(tiny_bundle), "-o", str(tmp_path / "o"), "--probabilities", "--modality", "MR"], capsys)
    assert code == 0, err
    image = sitk.ReadImage(str(tmp_path / "o" / "image_probabilities.nii.gz"))
    assert image.GetNumberOfComponentsPerPixel() == 5


def _write(path, array, spacing=(1.0, 1.0, 1.0)):
    image = sitk.GetImageFromArray(array)
    if image.GetDimension() == 3:
        image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))
    return path


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "missing.nii.gz", "no such file"),
        (lambda d: _write(d / "flat.nii.gz", np.zeros((40, 40), np.int16)), "2D"),
        (lambda d: _write_4d(d / "series.nii.gz"), "4D"),
        (lambda d: _write(d / "nan.nii.gz", np.full((8, 8, 8), np.nan, np.float32)), "NaN"),
    ],
    ids=["missing", "2d", "4d", "all-nan"],
)
def test_bad_inputs_give_one_clear_error(tiny_bundle, tmp_path, capsys, make, message):
    path = make(tmp_path)
    code, out, err = run(["segment", str(path), "--model", str(tiny_bundle), "-o", str(tmp_path / "o")], capsys)
    assert code == 1
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1 and message in errors[0] and errors[0].count(str(path)) == 1  # the file, named once
    assert errors[0].startswith("mmseg segment: error: ")
    assert "Traceback" not in err
    if message == "2D":  # a single slice: the hint is about slices, not about 4D series
        assert "4D" not in errors[0] and "slice" in errors[0]


def _write_4d(path):
    image = sitk.JoinSeries([sitk.GetImageFromArray(np.zeros((6, 6, 6), np.float32))] * 2)
    sitk.WriteImage(image, str(path))
    return path


def test_unknown_modality_and_unknown_model(tiny_bundle, tmp_path, capsys):
    code, _, err = run(["segment", str(REAL_CT), "--model", str(tiny_bundle), "--modality", "PET", "-o", str(tmp_path)], capsys)
    assert code == 1 and "unknown modality 'PET'" in err and "auto" in err
    code, _, err = run(["segment", str(REAL_CT), "--model", "no-such-model", "-o", str(tmp_path)], capsys)
    assert code == 1 and "no-such-model" in err and "Traceback" not in err
