
import pytest
from conftest import SAMPLES, load_script

from training.real_scans import real_scan

pytestmark = pytest.mark.slow  # timed runs of whole pipelines: CI's second step


def test_both_label_variants_are_scored_and_timed_side_by_side(tiny_bundle):
    bench = load_script("benchmarks/smooth_labels.py")
    (row,) = bench.measure([str(tiny_bundle)], 2, data=SAMPLES, scans=(real_scan("abdomen_mr_01"),))
    assert row["scan"] == "abdomen_mr_01" and row["size"] == [117, 91, 20]  # 3 mm: finer than the 6 mm tiny model
    assert set(row["dice"]) == {"smooth", "nearest"}
    assert set(row["dice"]["smooth"]) == {"liver", "spleen", "kidney_right", "kidney_left"}
    assert min(row["cpu_s"].values()) > 0
    assert abs(row["cpu_ratio"] - row["cpu_s"]["smooth"] / row["cpu_s"]["nearest"]) < 0.02 * max(1.0, row["cpu_ratio"])
    text = bench.markdown([row], 1, 2)
    assert "| abdomen_mr_01 (117x91x20, 3 x 3 x 3) |" in text and "best of 2" in text
