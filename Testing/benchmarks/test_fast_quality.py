
import pytest
from conftest import SAMPLES, load_script

from training.real_scans import real_scan

pytestmark = pytest.mark.slow  # timed runs of whole pipelines: CI's second step


def test_both_qualities_are_timed_side_by_side_and_compared(tiny_bundle):
    bench = load_script("benchmarks/fast_quality.py")
    (row,) = bench.measure(str(tiny_bundle), 2, data=SAMPLES, scans=(real_scan("abdomen_mr_01"),))
    assert row["scan"] == "abdomen_mr_01" and row["size_xyz"] == [117, 91, 20]
    assert min(row["normal_cpu_s"], row["fast_cpu_s"]) > 0
    assert abs(row["ratio_cpu"] - row["fast_cpu_s"] / row["normal_cpu_s"]) < 0.01 * max(1.0, row["ratio_cpu"])
    assert set(row["fast_vs_normal_dice"]) == {"liver", "spleen", "kidney_right", "kidney_left"}
    record = {"model": "tiny", "threads": 1, "repeats": 2, "machine": "x", "rows": [row],
              "acceptance": {"scan": "abdomen_mr_01", "value": 0.5, "limit": bench.LIMIT, "passed": False}}
    assert "0.50 (limit 0.33): FAIL" in bench.markdown(record)
