import json

import pytest
from conftest import load_script


@pytest.mark.slow
def test_quick_run_measures_both_sides_and_checks_the_inference_imports(tmp_path, capsys):
    """Both sides of the light measures (the acceptance's two are measured though not asked for); the two
    model-loading measures, a fresh process of the default model's load each, on this checkout only."""
    bench = load_script("benchmarks/startup.py")
    code = bench.main(["--quick", "--baseline", "HEAD", "--results", str(tmp_path), "--measures", "skip_existing"])
    record = json.loads((tmp_path / "startup_quick.json").read_text())
    assert record["repeats"] == 1 and list(record["measures"]) == ["missing_file", "import_inference", "skip_existing"]
    assert record["baseline"] == bench.short_revision("HEAD") != "HEAD"  # the revision's hash, not its relative name
    for row in record["measures"].values():
        for side in ("baseline", "current"):
            assert len(row[side]["seconds"]) == 1 and row[side]["median_s"] == row[side]["best_s"] > 0
        assert row["ratio_median"] == pytest.approx(row["baseline"]["median_s"] / row["current"]["median_s"])
    current = record["measures"]
    assert current["import_inference"]["current"]["imports"] == []  # no training code, no MONAI
    assert current["skip_existing"]["current"]["loaded_model"] is False
    work = tmp_path / "work"
    work.mkdir()
    loaded = bench.load_model(bench.REPO, work)
    assert "monai.losses" in loaded["imports"]  # MONAI's __init__ loads it: said, not hidden
    assert not [m for m in loaded["imports"] if m.startswith("MultiModalSegLib")] and loaded["seconds"] > 0
    assert bench.load_model_as_mmseg(bench.REPO, work)["optional"] == []  # MONAI loaded none of monai_start.SKIPPED
    assert "missing.nii.gz: no such file" in current["missing_file"]["current"]["message"]
    missing = record["acceptance"]["missing_file_median_s"]
    assert missing["value"] == round(current["missing_file"]["current"]["median_s"], 3)
    assert code == (0 if all(c["passed"] for c in record["acceptance"].values()) else 1)
    assert "| `mmseg segment missing.nii.gz -o x` |" in capsys.readouterr().out
