"""``training/candidates_table.py``: the README's candidates table is the committed result files', and a
figure typed over it, or a candidate whose names disagree, is caught."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from Testing.conftest import load_script

REPO = Path(__file__).resolve().parents[2]


def _module():
    return load_script("training/candidates_table.py")


def test_the_committed_readme_block_is_the_committed_result_files():
    assert _module().main(["--check"]) == 0


def test_a_figure_typed_over_the_block_is_caught(tmp_path, capsys):
    c = _module()
    readme = tmp_path / "README.md"
    text = (REPO / "README.md").read_text()
    assert "| 0.778 |" in text.split(c.README_MARKERS[0], 1)[1]
    readme.write_text(text.replace("| 0.778 |", "| 0.798 |", 1))
    assert c.main(["--check", "--readme", str(readme)]) == 1
    assert "differs from the result files" in capsys.readouterr().out


def _scores(folder: Path, bundle: str, liver: float) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    row = {"bundle": bundle, "scan": "chest_abdomen_ct_02", "modality": "CT", "role": "validation", "quality": "normal",
           "metrics": {"liver": {"dice": liver}, "spleen": {"dice": 0.5}}}
    (folder / "real_scans.json").write_text(json.dumps([row]))


def test_rows_come_from_the_named_models_figures(tmp_path):
    c = _module()
    _scores(tmp_path / "a", "m 1.0.0", 0.9)
    _scores(tmp_path / "b", "m-again 1.0.0", 0.9)
    entry = {"candidate": "vX", "change": "c", "state": "finished", "results": ["a", "b"], "models": ["m 1.0.0", "m-again 1.0.0"]}
    assert "| vX | c | finished | 0.900 / 0.500 | - | - | - | - |" == c.row(entry, tmp_path)
    _scores(tmp_path / "b", "m-again 1.0.0", 0.8)  # the same model exported twice, scored differently
    with pytest.raises(SystemExit, match="vX: validation CT is .* for m-again 1.0.0"):
        c.row(entry, tmp_path)
    with pytest.raises(SystemExit, match="vX: 'other 1.0.0' is in none of"):  # a mistyped name beside a right one
        c.row({**entry, "models": ["m 1.0.0", "other 1.0.0"]}, tmp_path)
    with pytest.raises(SystemExit, match="no result folder"):
        c.row({**entry, "results": ["missing"]}, tmp_path)
