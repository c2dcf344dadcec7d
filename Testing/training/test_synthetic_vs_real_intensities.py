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
