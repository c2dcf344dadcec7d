import numpy as np
import pytest
from conftest import SAMPLES, load_script

from training.real_scans import real_scan

pytestmark = pytest.mark.slow  # whole pipelines: CI's second step


def test_one_pass_and_the_ensemble_are_scored_side_by_side(tiny_bundle):
    bench = load_script("benchmarks/polarity_ensemble.py")
    mr = real_scan("abdomen_mr_01")
    rows = bench.measure([str(tiny_bundle)], data=SAMPLES, scans=(mr,), drawn_from=("abdomen_mr_01",),
                         weightings=("T1", "water"))
    assert [(r["image"], r["role"]) for r in rows] == [("real", "left out"), ("drawn T1", "phantom"), ("drawn water", "phantom")]
    for r in rows:
        assert set(r["dice"]) == {"single", "ensemble"} and set(r["dice"]["single"]) == set(mr.organs)
        assert r["mean"]["single"] == pytest.approx(np.mean(list(r["dice"]["single"].values())), abs=1e-4)
        assert not r["model_asks"]
    text = bench.markdown(rows, 1)
    assert "| drawn MR, every weighting (2) |" in text and "| real MR, left out (1) |" in text


def test_drawn_weightings_follow_the_signal_table():
    """Fat is the brightest tissue of a Dixon fat image and the darkest but air of a water image."""
    bench = load_script("benchmarks/polarity_ensemble.py")
    mr = real_scan("abdomen_mr_01")
    fat, reference = bench.drawn_mr(mr, "fat", SAMPLES)
    water, _ = bench.drawn_mr(mr, "water", SAMPLES)
    liver = reference == 1
    assert fat.array.shape == reference.shape and liver.any()
    assert np.median(fat.array[liver]) < 0.2 * np.percentile(fat.array, 99)
    assert np.median(water.array[liver]) > 3 * np.median(fat.array[liver])
