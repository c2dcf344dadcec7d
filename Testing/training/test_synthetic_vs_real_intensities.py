"""``training/synthetic_vs_real_intensities.py``: organ medians of synthesised MR items and of the real
MR, both after the library's MR profile."""

from __future__ import annotations

import numpy as np
import pytest

from Testing.conftest import load_script


def test_organ_medians_skip_absent_organs():
    script = load_script("training/synthetic_vs_real_intensities.py")
    image = np.linspace(0, 1, 8, dtype=np.float32).reshape(2, 2, 2)
    label = np.array([1, 1, 0, 0, 3, 4, 0, 0], np.uint8).reshape(2, 2, 2)
    medians = script.organ_medians(image, label)
    assert medians["liver"] == pytest.approx(np.median(image.ravel()[:2]))
    assert medians["kidneys"] == pytest.approx(np.median(image.ravel()[4:6])) and medians["spleen"] is None


def test_table_has_synthetic_contrasts_and_the_real_mr(tmp_path, capsys):
    script = load_script("training/synthetic_vs_real_intensities.py")
    out = tmp_path / "table.md"
    assert script.main(["--items", "3", "--out", str(out)]) == 0
    text = out.read_text()
    assert text == capsys.readouterr().out and "percentiles of all voxels" in text
    rows = [line for line in text.splitlines() if line.startswith("| synthesised, MR ")]
    assert 1 <= len(rows) <= 3 and sum(int(r.split("|")[2]) for r in rows) == 3
    real = next(line for line in text.splitlines() if line.startswith("| real, abdomen_mr_01"))
    liver, spleen, kidneys = (float(v) for v in real.split("|")[3:6])
    assert 0.05 < liver < 0.3 and spleen < liver and kidneys < liver  # the T1-like sample: organs darker than fat


def test_a_recipe_sets_the_profile_and_the_jitter_of_the_table(tmp_path):
    from Testing.conftest import REPO

    script = load_script("training/synthetic_vs_real_intensities.py")
    pinned = tmp_path / "pinned.md"
    assert script.main(["--items", "2", "--recipe", str(REPO / "training/configs/abdomen_synth_v12.json"), "--out", str(pinned)]) == 0
    text = pinned.read_text()
    assert "'foreground': 'above_mean'" in text and "jitter share 0" in text
    assert "jittered" not in text and "other foreground" not in text
    jittered = tmp_path / "jittered.md"
    assert script.main(["--items", "6", "--recipe", str(REPO / "training/configs/abdomen_synth_v16.json"), "--out", str(jittered)]) == 0
    lines = jittered.read_text().splitlines()
    assert "jitter share 0.75" in lines[0] and "percentiles of all voxels" in lines[0]
    moved = next(line for line in lines if line.startswith("| synthesised, jittered items"))
    assert 1 <= int(moved.split("|")[2]) <= 6
    own, other = (next(line for line in lines if line.startswith(f"| real, abdomen_mr_01 ({words})"))
                  for words in ("whole volume", "whole volume, other foreground"))
    assert float(other.split("|")[3]) < float(own.split("|")[3])  # above the mean, the liver falls to the value of air
