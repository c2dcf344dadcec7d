import json

import pytest
from conftest import load_script


def test_quick_run_times_both_layouts_side_by_side(tmp_path, capsys):
    bench = load_script("benchmarks/training_memory_format.py")
    assert bench.main(["--quick", "--steps", "2", "--threads", "1", "--results", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "training_memory_format_quick.json").read_text())
    assert record["quick"] and record["patch_size_zyx"] == [16, 32, 32] and record["modalities"] == ["CT", "MR"]
    assert {k: len(v) for k, v in record["seconds"].items()} == {"contiguous": 2, "channels_last": 2}
    assert all(t > 0 for t in record["seconds"]["contiguous"] + record["seconds"]["channels_last"])
    median = record["median_s"]
    assert record["speedup"] == pytest.approx(median["contiguous"] / median["channels_last"], rel=1e-2)
    # the same batch from the same weights, both in float32: only the order of the sums differs
    assert record["loss"]["contiguous"] > 0 and record["loss_difference"] < 1e-4 * record["loss"]["contiguous"]
    md = (tmp_path / "training_memory_format_quick.md").read_text()
    assert f"**{record['speedup']:.2f}x**" in md and "| channels-last (`cpu_channels_last`) |" in md
    assert "default / channels-last" in capsys.readouterr().out
