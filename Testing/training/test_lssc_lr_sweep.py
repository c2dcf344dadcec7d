"""The committed LSSC learning-rate sweep: its report is what the script renders from its JSON, and
the JSON holds the runs the recipe rests on."""

from __future__ import annotations

import json
from pathlib import Path

from Testing.conftest import load_script

REPO = Path(__file__).resolve().parents[2]


def _module():
    return load_script("training/lssc_lr_sweep.py")


def test_committed_report_is_rendered_from_the_committed_json():
    module = _module()
    doc = json.loads((module.OUT / "sweep.json").read_text())
    assert (module.OUT / "report.md").read_text() == module.report(doc, "python training/lssc_lr_sweep.py")
    assert [r["name"] for r in doc["runs"]] == [name for name, *_ in module.RUNS]


def test_the_recipe_is_the_run_that_learns():
    """abdomen_lssc.json trains at the rate, and pretrains with the task, of the sweep's run that
    segments in both modalities."""
    doc = json.loads((_module().OUT / "sweep.json").read_text())
    recipe = json.loads((REPO / "training" / "configs" / "abdomen_lssc.json").read_text())
    learnt = [r for r in doc["runs"] if min(r["validation"][-1]["dice"][m]["mean"] for m in ("CT", "MR")) > 0.05]
    assert any(r["lr"] == recipe["lr"] and (r["pretrain"] or {}).get("task") == recipe["pretrain"]["task"] for r in learnt)
