import json
import time

import pytest
from conftest import load_script

pytestmark = pytest.mark.slow  # timed runs of whole pipelines: CI's second step


def test_quick_run_measures_one_and_two_processes_and_their_ratio(tmp_path, capsys):
    bench = load_script("benchmarks/ddp_throughput.py")
    assert bench.main(["--quick", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "ddp_throughput_quick.json").read_text())
    quick = bench.SETTINGS["quick"]
    assert record["mode"] == "quick" and record["setting"]["backend"] == "gloo"
    one, two = record["runs"]
    assert (one["processes"], two["processes"]) == (1, 2)
    assert one["threads_per_process"] == two["threads_per_process"] == 1
    for run in record["runs"]:
        assert run["timed_steps"] == quick["steps"] and run["seconds"] > 0
        # samples/s = timed steps x global batch x 2 modalities / seconds (rounded to 3 decimals), the same global batch for both
        # (seconds are stored to 6 decimals: on a fast machine that alone moves samples/s by more than 6e-4)
        assert run["samples_per_s"] == pytest.approx(quick["steps"] * quick["batch"] * 2 / run["seconds"], rel=1e-4, abs=6e-4)
        assert run["last_loss"] > 0
    assert record["ratios"] == [pytest.approx(two["samples_per_s"] / one["samples_per_s"], abs=2e-3)]
    assert record["ratio_2_over_1_median"] == record["ratios"][0]
    # the same global batch and the same starting weights: DDP's loss is close to one process's
    assert two["last_loss"] == pytest.approx(one["last_loss"], rel=0.05)
    md = (tmp_path / "ddp_throughput_quick.md").read_text()
    assert f"**{record['ratio_2_over_1_median']}**" in md and md.count("| 0 | ") == 2
    assert "ratio (2 processes / 1 process" in capsys.readouterr().out


def test_a_process_that_never_returns_is_stopped_with_a_clear_error(tmp_path, monkeypatch):
    bench = load_script("benchmarks/ddp_throughput.py", name="ddp_throughput_stuck")
    monkeypatch.setattr(bench, "JOIN_SECONDS", 2)
    monkeypatch.setattr(bench, "_rank", lambda *args: time.sleep(120))  # forked: the child runs it
    started = time.monotonic()
    with pytest.raises(SystemExit, match="did not finish within 2 s"):
        bench.measure(2, {"steps": 2, "batch_size": 1}, tmp_path, 0)
    assert time.monotonic() - started < 60
