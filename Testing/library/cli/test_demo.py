import json

import pytest

from MultiModalSegLib.cli import main


def test_demo_writes_segmentations_overlays_and_a_dice_table(tiny_bundle, tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--model", str(tiny_bundle), "--output", str(out), "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert "case 1/2 abdomen_ct_01: 100/100 done" in captured.err and "case 2/2 abdomen_mr_01: 100/100 done" in captured.err
    for case in ("abdomen_ct_01", "abdomen_mr_01"):
        assert (out / f"{case}.seg.nrrd").stat().st_size > 0
        assert (out / f"{case}.png").read_bytes()[:4] == b"\x89PNG"
        assert f"| {case} |" in printed
    assert "liver Dice" in (out / "dice.md").read_text()


@pytest.mark.slow
def test_demo_reports_each_case_and_json_lines_with_progress(tiny_bundle, tmp_path, capsys):
    """The plan first, a bar per case on stderr (plain lines when stderr is not a terminal); with
    --progress stdout holds JSON lines only: plan, progress per case, the result with the metrics."""
    out = tmp_path / "demo"
    assert main(["demo", "--model", str(tiny_bundle), "--output", str(out), "--device", "cpu", "--progress"]) == 0
    captured = capsys.readouterr()
    events = [json.loads(line) for line in captured.out.splitlines()]
    assert events[0]["event"] == "plan" and events[0]["cases"] == ["abdomen_ct_01", "abdomen_mr_01"]
    tasks = {e["task"] for e in events if e["event"] == "progress"}
    assert tasks == {"case 1/2 abdomen_ct_01", "case 2/2 abdomen_mr_01"}
    finished = [e for e in events if e["event"] == "progress" and e["done"] == 100]
    assert {e["task"] for e in finished} == tasks and events[-1]["event"] == "result" and set(events[-1]["metrics"]) == {"abdomen_ct_01", "abdomen_mr_01"}
    assert captured.err.startswith("demo: segmenting the shipped samples") and "| abdomen_ct_01 |" in captured.err
