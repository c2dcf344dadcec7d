import json
import statistics

import pytest
from conftest import load_script

from MultiModalSegLib.methods import METHODS

pytestmark = pytest.mark.slow  # timed runs of whole pipelines: CI's second step


def test_methods_come_from_the_registry_joint_first():
    bench = load_script("benchmarks/training_speed.py")
    names = bench.registered_methods()
    assert names[0] == "joint" and sorted(names) == sorted(METHODS)


def test_every_method_gets_its_own_network_at_the_same_widths(tmp_path):
    bench = load_script("benchmarks/training_speed.py")
    configs = {m: bench.method_config(m, bench.FULL, tmp_path / "dataset.json", "cpu", 1) for m in METHODS}
    assert {c["patch_size"] == bench.FULL["patch_size"] and c["batch_size"] == 2 for c in configs.values()} == {True}
    assert configs["joint"]["network"] == {"name": "unet3d", "params": {"features": [8, 16, 32, 64]}}
    assert configs["lssc"]["network"]["name"] == "transformer_unet3d"


def test_quick_run_times_methods_on_the_same_batches(tmp_path):
    bench = load_script("benchmarks/training_speed.py")
    code = bench.main(["--quick", "--methods", "ummkd", "--device", "cpu", "--threads", "1", "--results", str(tmp_path)])
    record = json.loads((tmp_path / "training_speed_quick.json").read_text())
    assert code == 0 and record["same_labelled_batches"] and record["reference"] == "joint"
    rows = {r["method"]: r for r in record["methods"]}
    assert list(rows) == ["joint", "ummkd"]
    assert record["setting"]["steps"] == record["setting"]["rounds"] == 1
    for row in rows.values():
        assert len(row["step_seconds"]) == 1 and row["step_seconds"][0] > 0
        assert row["median_step_s"] == round(statistics.median(row["step_seconds"]), 4)
        assert row["relative_to_joint"] == round(row["median_step_s"] / rows["joint"]["median_step_s"], 4)
        assert 0.1 < row["peak_rss_gb"] < 8 and row["parameters"] > 0
        assert row["batch_keys"] == ["CT", "MR"]
    assert rows["joint"]["relative_to_joint"] == 1.0
    md = (tmp_path / "training_speed_quick.md").read_text()
    assert f"| ummkd | {rows['ummkd']['parameters']:,} |" in md
