"""The ``mmseg detect`` sub-command."""

from __future__ import annotations

import argparse
from pathlib import Path

from MultiModalSegLib.cli import detect

DATA = Path(__file__).resolve().parents[3] / "Resources" / "SampleData"  # copies of ../shared/data


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mmseg")
    detect.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_detect_prints_modality_and_reason(capsys):
    ct, mr = DATA / "abdomen_ct_01" / "image.nii.gz", DATA / "abdomen_mr_01" / "image.nii.gz"
    args = _parse(["detect", str(ct), str(mr)])
    assert args.func is detect.run
    assert args.func(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{ct}: CT (") and lines[1].startswith(f"{mr}: MR (")


def test_detect_reports_bad_input(tmp_path, capsys):
    missing = tmp_path / "absent.nii.gz"
    args = _parse(["detect", str(missing)])
    assert detect.run(args) == 1
    assert str(missing) in capsys.readouterr().err
