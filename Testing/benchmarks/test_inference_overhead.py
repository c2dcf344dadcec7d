import json

import pytest
from conftest import load_script

pytestmark = pytest.mark.slow  # timed runs of whole pipelines: CI's second step


def test_quick_run_measures_both_and_reports_their_ratio(tiny_bundle, tmp_path, capsys):
    bench = load_script("benchmarks/inference_overhead.py")
    code = bench.main(["--quick", "--model", str(tiny_bundle), "--device", "cpu", "--threads", "1", "--results", str(tmp_path)])
    record = json.loads((tmp_path / "inference_overhead_quick.json").read_text())
    assert code == 0 and record["passed"] and record["device"] == "cpu" and record["repeats"] == 1
    assert record["model"]["name"] == "tiny" and record["model"]["patch_size_zyx"] == [16, 32, 32]
    (size,) = record["sizes"]
    assert size["size_xyz"] == list(bench.QUICK_SIZES[0]) and size["extent_mm"] == [410.0, 410.0, 300.0]
    # a Python process with PyTorch loaded takes well over 100 MB: the figure is the child's, not zero
    assert 0.1 < size["peak_rss_gb"] < bench.LIMIT_GB
    assert [r["quality"] for r in size["runs"]] == ["normal", "fast"]
    normal, fast = size["runs"]
    # fast works at the model's own voxel size, in windows at least as large as the training patch
    assert fast["model_spacing_mm"] == normal["model_spacing_mm"]
    assert normal["window_zyx"] == [16, 32, 32] and all(f >= n for f, n in zip(fast["window_zyx"], normal["window_zyx"], strict=True))
    for run in size["runs"]:
        for clock in ("", "_cpu"):  # wall and CPU time: the best of the measured times, and their ratio
            seg, raw = run[f"segment{clock}_seconds"], run[f"raw{clock}_seconds"]
            assert len(seg) == len(raw) == 1 and min(seg + raw) > 0
            assert run[f"segment_best{clock}_s"] == min(seg) and run[f"raw_best{clock}_s"] == min(raw)
            assert run[f"overhead{clock}"] == pytest.approx(run[f"segment_best{clock}_s"] / run[f"raw_best{clock}_s"], rel=1e-3)
    # neither acceptance size was measured: no verdict either way
    assert all(check["passed"] is None for check in record["acceptance"].values())
    md = (tmp_path / "inference_overhead_quick.md").read_text()
    assert md.count("| 48x48x32 |") == 2 and f"{normal['overhead']:.2f}x | {normal['overhead_cpu']:.2f}x" in md
    assert "overhead" in capsys.readouterr().out


def test_acceptance_checks_can_fail():
    bench = load_script("benchmarks/inference_overhead.py")

    def size(xyz, overhead, rss):
        runs = [{"overhead": 1.0, "overhead_cpu": 1.1}, {"overhead": 2 * overhead, "overhead_cpu": overhead}]
        return {"size_xyz": list(xyz), "peak_rss_gb": rss, "runs": runs}

    good = bench.acceptance([size((256, 256, 128), 1.2, 1.0), size((512, 512, 300), 1.0, 3.9)], "cpu")
    assert [c["passed"] for c in good.values()] == [True, True]
    bad = bench.acceptance([size((256, 256, 128), 1.31, 1.0), size((512, 512, 300), 1.0, 4.2)], "cpu")
    assert [c["passed"] for c in bad.values()] == [False, False]
    assert bad["overhead_256x256x128_cpu"]["value"] == 1.31  # CPU time, the worse of the two qualities
    # on a GPU the wall-time ratio is the one checked
    assert bench.acceptance([size((256, 256, 128), 0.7, 1.0)], "cuda")["overhead_256x256x128_cuda"]["value"] == 1.4
