"""``mmseg evaluate``: argument parsing and ``run`` on small label maps."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import SimpleITK as sitk

from MultiModalSegLib.cli import evaluate
from MultiModalSegLib.errors import InputError


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mmseg")
    evaluate.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def write(path, array):
    sitk.WriteImage(sitk.GetImageFromArray(array.astype(np.uint8)), str(path))
    return path


def organs(shift: int = 0) -> np.ndarray:
    a = np.zeros((6, 8, 10), dtype=np.uint8)
    a[1:5, 1:5, 1:4] = 1  # liver
    a[1:5, 1:5, 6:9] = 2  # spleen
    return np.roll(a, shift, axis=1)


@pytest.fixture
def folders(tmp_path):
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    pred.mkdir()
    ref.mkdir()
    for case, shift in (("c1", 0), ("c2", 1)):
        write(pred / f"{case}.nii.gz", organs())
        write(ref / f"{case}.nii.gz", organs(shift))
    return pred, ref


def test_register_sets_run_and_defaults(tmp_path):
    args = parse(["evaluate", "--pred", "p", "--ref", "r"])
    assert args.func is evaluate.run
    assert args.out is None and args.labels is None and args.ref_remap is None


def test_run_folders_prints_table_and_writes(folders, tmp_path, capsys):
    pred, ref = folders
    args = parse(["evaluate", "--pred", str(pred), "--ref", str(ref), "--out", str(tmp_path / "m"),
                  "--labels", "liver,spleen"])
    assert evaluate.run(args) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == (
        "| case | liver Dice | liver HD95 mm | liver ASSD mm | spleen Dice | spleen HD95 mm | spleen ASSD mm |"
    )
    assert "| c1 | 1.000 | 0.00 | 0.00 | 1.000 | 0.00 | 0.00 |" in out
    assert "**mean**" in out
    doc = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert set(doc["cases"]) == {"c1", "c2"} and set(doc["cases"]["c1"]) == {"liver", "spleen"}
    assert (tmp_path / "m" / "metrics.csv").exists() and (tmp_path / "m" / "metrics.md").exists()


def test_says_where_the_metrics_went(folders, tmp_path, capsys):
    pred, ref = folders
    assert evaluate.run(parse(["evaluate", "--pred", str(pred), "--ref", str(ref), "-o", str(tmp_path / "m")])) == 0
    captured = capsys.readouterr()
    assert captured.err.strip() == f"metrics written to {tmp_path / 'm'}: metrics.csv, metrics.json, metrics.md"
    assert "metrics written" not in captured.out  # stdout stays the table
    assert evaluate.run(parse(["evaluate", "--pred", str(pred / "c1.nii.gz"), "--ref", str(ref / "c1.nii.gz")])) == 0
    assert "metrics not written" in capsys.readouterr().err and not (pred / "metrics.csv").exists()


def test_run_folders_default_out_is_pred_dir(folders, capsys):
    pred, ref = folders
    evaluate.run(parse(["evaluate", "--pred", str(pred), "--ref", str(ref)]))
    assert (pred / "metrics.csv").exists()
    assert "kidney_left Dice" in capsys.readouterr().out  # default labels: the abdominal task


def test_run_files_with_remap(tmp_path, capsys):
    p = write(tmp_path / "case.nii.gz", organs())
    ts = np.where(organs() == 1, 5, np.where(organs() == 2, 1, 0))  # TotalSegmentator ids
    r = write(tmp_path / "ref.nii.gz", ts)
    args = parse(["evaluate", "--pred", str(p), "--ref", str(r), "--labels", "liver,spleen",
                  "--ref-remap", "totalsegmentator"])
    assert evaluate.run(args) == 0
    assert "| case | 1.000 | 0.00 | 0.00 | 1.000 | 0.00 | 0.00 |" in capsys.readouterr().out
    assert not (tmp_path / "metrics.csv").exists()  # a single file writes only with --output


def test_unknown_label_name(folders):
    pred, ref = folders
    with pytest.raises(InputError, match="pancreas"):
        evaluate.run(parse(["evaluate", "--pred", str(pred), "--ref", str(ref), "--labels", "liver,pancreas"]))


def test_unknown_remap_rejected_by_parser(capsys):
    with pytest.raises(SystemExit):
        parse(["evaluate", "--pred", "p", "--ref", "r", "--ref-remap", "nope"])


def test_file_and_folder_mixed(folders):
    pred, ref = folders
    with pytest.raises(InputError, match="both be files or both be folders"):
        evaluate.run(parse(["evaluate", "--pred", str(pred / "c1.nii.gz"), "--ref", str(ref)]))


def test_missing_input(tmp_path):
    with pytest.raises(InputError, match="--pred"):
        evaluate.run(parse(["evaluate", "--pred", str(tmp_path / "none"), "--ref", str(tmp_path)]))
