"""``training/phantom_anatomies.py``: the same phantom patients under both anatomies, one figure."""

from __future__ import annotations

import matplotlib.image as mpimg

from Testing.conftest import load_script


def test_the_figure_holds_a_column_per_patient_and_a_row_per_anatomy_and_organ(tmp_path, monkeypatch):
    script = load_script("training/phantom_anatomies.py")
    drawn = []
    real = script.generate_phantom
    monkeypatch.setattr(script, "generate_phantom", lambda *a, **k: drawn.append((a, k)) or real(*a, **k))
    out = tmp_path / "fig" / "anatomies.png"
    assert script.main(["--out", str(out), "--columns", "1", "--no-thorax"]) == 0
    assert mpimg.imread(out).shape[0] > 600  # four rows
    assert [(a[0], k["anatomy"], k["thorax"]) for a, k in drawn] == [("CT", 1, False), ("CT", 2, False)]
    assert drawn[0][0][1] == drawn[1][0][1] == script.patient_seed(0, "CT", 0)  # the same patient twice
