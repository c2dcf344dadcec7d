
import pytest
from conftest import SAMPLES, load_script

from training.real_scans import real_scan

pytestmark = pytest.mark.slow  # timed runs of whole pipelines: CI's second step


def test_variants_are_scored_against_normal_on_the_same_scan(tiny_bundle):
    bench = load_script("benchmarks/fast_variants.py")
    assert {"normal", "fast (shipped)"} <= set(bench.variants())
    rows = bench.measure(str(tiny_bundle), 1, data=SAMPLES, scans=(real_scan("abdomen_mr_01"),),
                         names=["2x windows, overlap 0"])
    by = {r["variant"]: r for r in rows}
    assert set(by) == {"normal", "2x windows, overlap 0"}
    assert by["normal"]["ratio_cpu"] == 1.0 and by["normal"]["mean_dice_change"] == 0.0
    other = by["2x windows, overlap 0"]
    # cpu_s is rounded to 1 ms and the ratio to 0.001: the ratio of the rounded times may differ by
    # up to half a millisecond in each, relative to the normal time (tens of ms on this tiny model)
    rounding = 0.0005 * (1.0 + other["ratio_cpu"]) / by["normal"]["cpu_s"] + 0.0005
    assert abs(other["ratio_cpu"] - other["cpu_s"] / by["normal"]["cpu_s"]) <= rounding + 1e-9
    assert set(other["dice"]) == {"liver", "spleen", "kidney_right", "kidney_left"}
    assert abs(other["mean_dice_change"] - (other["mean_dice"] - by["normal"]["mean_dice"])) < 1e-3
    table = bench.markdown({"model": "tiny", "threads": 1, "repeats": 1, "machine": "x", "rows": rows})
    assert "| abdomen_mr_01 | 2x windows, overlap 0 |" in table
