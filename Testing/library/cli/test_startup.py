"""``mmseg`` refuses what it can before the heavy imports, and skips finished work before loading a model."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REAL_MR, REPO

from MultiModalSegLib.cli import main

PROBE = """
import json, sys
from MultiModalSegLib.cli import main
code = main({argv!r})
print(json.dumps({{"code": code, "modules": sorted(sys.modules)}}))
"""


def run_fresh(argv: list[str]) -> tuple[int, list[str], str]:
    """``main(argv)`` in a new interpreter: exit code, the modules it imported, its stderr."""
    run = subprocess.run([sys.executable, "-c", PROBE.format(argv=argv)], cwd=REPO, capture_output=True, text=True, timeout=600)
    result = json.loads(run.stdout.splitlines()[-1])
    return result["code"], result["modules"], run.stderr


def heavy(modules: list[str]) -> list[str]:
    return [m for m in modules if m.split(".")[0] in ("torch", "monai", "SimpleITK", "numpy", "scipy", "jsonschema")]


def test_a_missing_input_is_refused_before_any_heavy_import(tmp_path):
    missing = tmp_path / "missing.nii.gz"
    code, modules, err = run_fresh(["segment", str(missing), "-o", str(tmp_path / "x")])
    assert code == 1
    assert err.strip() == f"mmseg segment: error: {missing}: no such file or folder; check the path."
    assert heavy(modules) == []


def test_a_missing_entry_of_a_list_and_a_misspelt_device_are_refused_before_any_heavy_import(tmp_path):
    listing = tmp_path / "cases.txt"
    listing.write_text(f"{REAL_MR}\nnot_there.nii.gz\n")
    code, modules, err = run_fresh(["segment", str(listing), "-o", str(tmp_path / "x")])
    assert code == 1 and f"{tmp_path / 'not_there.nii.gz'}: no such file" in err and heavy(modules) == []
    code, modules, err = run_fresh(["segment", str(REAL_MR), "-o", str(tmp_path / "x"), "--device", "cuda0"])
    assert code == 1 and "unknown device 'cuda0'" in err and heavy(modules) == []


def test_existing_outputs_are_skipped_before_a_model_loads(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "image.seg.nrrd").write_bytes(b"an earlier result")
    # the model named here does not exist: had it been loaded, the command would fail
    code = main(["segment", str(REAL_MR), "-o", str(out), "--model", str(tmp_path / "no-such-bundle.zip")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out.strip() == f"{REAL_MR}: {out / 'image.seg.nrrd'} exists, skipped (--overwrite replaces it)"
    assert "model:" not in captured.err
    assert (out / "image.seg.nrrd").read_bytes() == b"an earlier result"
