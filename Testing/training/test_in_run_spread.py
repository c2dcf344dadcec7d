"""``training/in_run_spread.py``: the final check and the range over a run's last checks."""

from __future__ import annotations

import json

import pytest

from Testing.conftest import load_script


def _check(step: int, mr_mean: float, mr_spleen: float, ct: tuple[float, float] | None = None) -> dict:
    dice = {"MR": {"liver": 0.5, "spleen": mr_spleen, "kidney_right": 0.5, "kidney_left": 0.5, "mean": mr_mean}}
    if ct is not None:
        dice["CT"] = {"liver": ct[0], "spleen": ct[1], "mean": sum(ct) / 2}
    return {"event": "validation", "step": step, "dice": dice}


RECORDS = [
    {"event": "start", "step": 0, "steps": 100},
    _check(25, 0.10, 0.00, (0.5, 0.1)),
    _check(50, 0.20, 0.10, (0.6, 0.2)),
    _check(75, 0.90, 0.90, (0.9, 0.9)),  # checked again after a resume: the later record counts
    {"event": "start", "step": 80, "steps": 100},
    _check(75, 0.40, 0.30, (0.7, 0.5)),
    _check(100, 0.50, 0.20, (0.8, 0.6)),
]


def test_spread_takes_the_last_part_of_the_planned_steps_and_the_last_record_of_a_step():
    script = load_script("training/in_run_spread.py")
    row = script.spread(RECORDS, last=0.25)
    assert row["final_step"] == 100 and row["planned"] == 100 and row["late_steps"] == [75, 100]
    assert row["measures"]["MR mean"] == {"final": 0.5, "low": 0.4, "high": 0.5}
    assert row["measures"]["MR spleen"] == {"final": 0.2, "low": 0.2, "high": 0.3}
    assert row["measures"]["CT spleen"] == {"final": 0.6, "low": 0.5, "high": 0.6}
    assert script.spread(RECORDS, last=1.0)["measures"]["CT liver"] == {"final": 0.8, "low": 0.5, "high": 0.8}
    mr_only = [r if r["event"] != "validation" else {**r, "dice": {"MR": r["dice"]["MR"]}} for r in RECORDS]
    assert script.spread(mr_only)["measures"]["CT liver"] is None


def test_main_writes_the_table_and_refuses_a_folder_without_progress(tmp_path, capsys):
    script = load_script("training/in_run_spread.py")
    run = tmp_path / "run"
    run.mkdir()
    (run / "progress.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    out = tmp_path / "report"
    assert script.main(["--run", f"a={run}", "--out", str(out)]) == 0
    text = (out / "in_run_spread.md").read_text()
    assert "| a | 100 of 100 | 2 (75, 100) | 0.50 (0.40-0.50) | 0.20 (0.20-0.30) | 0.80 (0.70-0.80) | 0.60 (0.50-0.60) |" in text
    assert "MR mean: 0.10; MR spleen: 0.10; CT liver: 0.10; CT spleen: 0.10" in text
    assert json.loads((out / "in_run_spread.json").read_text())["a"]["late_steps"] == [75, 100]
    with pytest.raises(SystemExit):
        script.main(["--run", f"b={tmp_path / 'none'}", "--out", str(out)])
    assert "no training progress at" in capsys.readouterr().err
