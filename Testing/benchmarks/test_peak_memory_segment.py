import json

import pytest
from conftest import load_script

pytestmark = pytest.mark.slow  # timed runs of whole pipelines: CI's second step


def test_benchmark_measures_a_child_process(tiny_bundle, tmp_path, capsys):
    bench = load_script("benchmarks/peak_memory_segment.py")
    code = bench.main(["--size", "96", "96", "48", "--model", str(tiny_bundle), "--results", str(tmp_path)])
    record = json.loads((tmp_path / "peak_memory_segment_96x96x48.json").read_text())
    assert code == 0 and record["within_limit"]
    # a Python process with PyTorch loaded takes well over 100 MB: the figure is the child's, not zero
    assert 0.1 < record["peak_rss_gb"] < bench.LIMIT_GB
    assert "peak RSS" in capsys.readouterr().out
