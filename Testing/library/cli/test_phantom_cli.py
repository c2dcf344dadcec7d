"""``mmseg phantom``: the plan and a bar per case on stderr, where the data set is and how to train on
it on stdout; with ``--progress`` JSON lines only on stdout."""

from __future__ import annotations

import json

from MultiModalSegLib.cli import main


def test_phantom_reports_plan_progress_and_how_to_use_the_data(tmp_path, capsys):
    out = tmp_path / "data" / "phantoms"
    assert main(["phantom", "--out", str(out), "--ct", "1", "--mr", "1"]) == 0
    captured = capsys.readouterr()
    assert captured.err.startswith(f"writing 2 phantoms (1 CT, 1 MR; the last 0 of each for validation) to {out}")
    assert "phantoms: 1/2" in captured.err and "phantoms: 2/2" in captured.err
    assert captured.out.startswith(f"phantom dataset: {out / 'dataset.json'}\ntrain on it: list ")
    assert "mmseg train --config" in captured.out and "phantoms_data_ummkd.json" in captured.out

    again = tmp_path / "json"
    assert main(["phantom", "--out", str(again), "--ct", "1", "--mr", "1", "--progress"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["event"] for e in events][0] == "plan" and events[-1] == {"event": "result", "dataset": str(again / "dataset.json")}
    assert [(e["done"], e["total"]) for e in events if e["event"] == "progress"][-1] == (2, 2)
