"""``training/anatomy_or_appearance.py``: one model on the real scan and on its anatomy drawn as CT and MR."""

import json

import pytest

from Testing.conftest import SAMPLES, load_script

pytestmark = pytest.mark.slow  # trains the tiny bundle: CI's second step


def test_each_image_goes_through_its_branch_and_is_scored(tiny_bundle, tmp_path):
    script = load_script("training/anatomy_or_appearance.py")
    assert script.main(["--bundle", f"tiny={tiny_bundle}", "--weighting", "fat", "--out", str(tmp_path), "--data", str(SAMPLES)]) == 0
    rows = json.loads((tmp_path / "anatomy_or_appearance.json").read_text())
    assert [(r["image"], r["modality"]) for r in rows] == [("real", "MR"), ("drawn CT", "CT"), ("drawn MR fat", "MR")]
    for r in rows:
        assert r["model"] == "tiny" and not r["trained_on_scan"]
        assert set(r["dice"]) == {"liver", "spleen", "kidney_right", "kidney_left"}
        assert all(0.0 <= d <= 1.0 for d in r["dice"].values())
    text = (tmp_path / "anatomy_or_appearance.md").read_text()
    assert "| tiny | drawn CT | CT |" in text and "--weighting fat" in text
