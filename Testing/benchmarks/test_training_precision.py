import json

import pytest
from conftest import load_script


def test_quick_run_times_both_precisions_side_by_side(tmp_path, capsys):
    bench = load_script("benchmarks/training_precision.py")
    assert bench.main(["--quick", "--steps", "2", "--threads", "1", "--results", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "training_precision_quick.json").read_text())
    assert record["quick"] and record["patch_size_zyx"] == [16, 32, 32] and record["modalities"] == ["CT", "MR"]
    assert {k: len(v) for k, v in record["seconds"].items()} == {"float32": 2, "bfloat16": 2}
    assert all(t > 0 for t in record["seconds"]["float32"] + record["seconds"]["bfloat16"])
    median = record["median_s"]
    assert record["speedup"] == pytest.approx(median["float32"] / median["bfloat16"], rel=1e-2)
    # the same batch from the same weights: close, not equal (bfloat16 keeps 8 bits of mantissa)
    assert record["loss"]["float32"] > 0 and record["loss_difference"] < 0.05 * record["loss"]["float32"]
    md = (tmp_path / "training_precision_quick.md").read_text()
    assert f"**{record['speedup']:.2f}x**" in md and "| bfloat16 autocast |" in md
    assert "float32 / bfloat16" in capsys.readouterr().out
