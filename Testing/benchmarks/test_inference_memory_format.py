import json

import pytest
from conftest import load_script, real_mr_crop

from MultiModalSegLib.io import write_image_atomic
from training.real_scans import real_scan

pytestmark = pytest.mark.slow  # timed runs of whole pipelines: CI's second step


def test_both_layouts_segment_the_same_scan_side_by_side(tmp_path):
    bench = load_script("benchmarks/inference_memory_format.py")
    crop = real_mr_crop()  # under the real MR's name, so that the default model runs a window or two
    (tmp_path / "data" / "abdomen_mr_01").mkdir(parents=True)
    write_image_atomic(crop.to_sitk(), tmp_path / "data" / "abdomen_mr_01" / "image.nii.gz")
    (row,) = bench.measure(None, 1, data=tmp_path / "data", scans=(real_scan("abdomen_mr_01"),))
    assert row["scan"] == "abdomen_mr_01" and row["size_xyz"] == [96, 64, 20]
    assert {k: len(v) for k, v in row["seconds"].items()} == {"contiguous": 1, "channels_last": 1}
    median = row["median_s"]
    assert min(median.values()) > 0 and abs(row["speedup"] - median["contiguous"] / median["channels_last"]) < 0.01 * row["speedup"]
    assert row["voxels_agreeing"] > 0.999 and set(row["dice_agreement"]) == {"liver", "spleen", "kidney_right", "kidney_left"}
    record = {"model": "default", "threads": 2, "repeats": 1, "machine": {"processor": "p", "torch": "t"}, "rows": [row]}
    md = bench.markdown(record)
    assert f"**{row['speedup']:.2f}x**" in md and "| abdomen_mr_01 (96x64x20) |" in md
    bench.save_results(tmp_path, "inference_memory_format", record, md)
    assert json.loads((tmp_path / "inference_memory_format.json").read_text())["rows"][0]["scan"] == "abdomen_mr_01"


def test_a_batch_normalised_model_is_refused_with_its_reason(tiny_bundle):
    bench = load_script("benchmarks/inference_memory_format.py")
    with pytest.raises(SystemExit, match="batch normalisation"):
        bench.measure(str(tiny_bundle), 1, scans=())
