"""``training/scorecard.py``: a candidate against the default on every real-scan check, from the result files."""

from __future__ import annotations

import json

import pytest

from Testing.conftest import load_script


def real_scans(model: str, ct: tuple[float, float], mr: float) -> list[dict]:
    def row(scan, role, quality, dice):
        return {"bundle": model, "scan": scan, "role": role, "quality": quality,
                "metrics": {o: {"dice": d} for o, d in dice.items()}}
    return [row("ct", "validation", "normal", {"liver": ct[0], "spleen": ct[1]}),
            row("ct", "validation", "fast", {"liver": ct[0] - 0.03, "spleen": ct[1]}),
            row("mr", "left out", "normal", {"liver": mr, "spleen": mr, "kidney_right": mr, "kidney_left": mr}),
            row("train", "train", "normal", {"liver": 0.99})]


def write(folder, models: dict[str, dict]) -> None:
    """Result files of the four checks for ``models`` (name -> figures)."""
    (folder / "ensemble").mkdir(parents=True)
    (folder / "real_scans.json").write_text(json.dumps([r for m, f in models.items() for r in real_scans(m, f["ct"], f["mr"])]))
    (folder / "external_liver_ct.json").write_text(json.dumps({"rows": [
        {"bundle": m, "quality": q, "mean": f["lits"] - (q == "fast") * 0.1} for m, f in models.items() for q in ("normal", "fast")]}))
    (folder / "external_kidney_mr.json").write_text(json.dumps({"rows": [
        {"bundle": m, "quality": "normal", "scan": s, "ratio": r} for m, f in models.items() for s, r in zip(("a", "b"), f["kidney"], strict=True)]}))
    (folder / "ensemble" / "normalisation_ensemble.json").write_text(json.dumps({"rows": [
        {"model": m, "model_asks": True, "bias_field": {"ensemble": {"25 %": {"lowest_agreement": f["bias"]}},
                                                        "single": {"25 %": {"lowest_agreement": 0.0}}}}
        for m, f in models.items() if "bias" in f]}))


BOTH_PASS_THE_BIAS_FIELD = {"D 1.0": {"ct": (0.88, 0.70), "mr": 0.66, "lits": 0.78, "kidney": (0.70, 0.74), "bias": 0.9},
                            "A 2.0": {"ct": (0.92, 0.78), "mr": 0.70, "lits": 0.78, "kidney": (0.70, 0.74), "bias": 0.9}}


def test_each_rule_is_judged_against_the_default(tmp_path):
    script = load_script("training/scorecard.py")
    write(tmp_path / "r", {
        "D 1.0": {"ct": (0.88, 0.70), "mr": 0.66, "lits": 0.78, "kidney": (0.70, 0.74)},
        "A 2.0": {"ct": (0.92, 0.78), "mr": 0.70, "lits": 0.765, "kidney": (0.66, 0.73), "bias": 0.86},  # passes all
        "B 3.0": {"ct": (0.92, 0.78), "mr": 0.60, "lits": 0.70, "kidney": (0.30, 0.40), "bias": 0.80},
    })
    assert script.main(["--results", str(tmp_path / "r"), "--default", "D 1.0", "--out", str(tmp_path / "out")]) == 0
    models = json.loads((tmp_path / "out" / "scorecard.json").read_text())["models"]
    assert list(models) == ["D 1.0", "A 2.0", "B 3.0"]  # the default first
    assert models["A 2.0"]["passes"] == {"validation CT": True, "left-out MR": True, "LiTS": True, "kidney MR": True,
                                         "bias field": True}
    assert models["B 3.0"]["passes"] == {"validation CT": True, "left-out MR": False, "LiTS": False, "kidney MR": False,
                                         "bias field": False}
    assert models["A 2.0"]["validation CT"] == 0.85 and models["A 2.0"]["validation CT fast liver"] == pytest.approx(0.89)
    assert models["A 2.0"]["LiTS"] == 0.765  # normal quality, not fast
    assert models["A 2.0"]["bias field"] == {"25 %": 0.86}  # under the inference the bundle declares
    text = (tmp_path / "out" / "scorecard.md").read_text()
    assert "| `D 1.0` | 0.790 (0.880 / 0.700) |" in text and "(the default)" in text
    assert "| 0.860 | validation CT yes, left-out MR yes, LiTS yes, kidney MR yes, bias field yes |" in text


def test_unmeasured_checks_fail_and_conflicting_figures_are_refused(tmp_path):
    script = load_script("training/scorecard.py")
    write(tmp_path / "one", {"D 1.0": {"ct": (0.88, 0.70), "mr": 0.66, "lits": 0.78, "kidney": (0.70, 0.74)},
                             "A 2.0": {"ct": (0.92, 0.78), "mr": 0.70, "lits": 0.78, "kidney": (0.70, 0.74)}})
    script.main(["--results", str(tmp_path / "one"), "--default", "D 1.0", "--out", str(tmp_path / "out")])
    passes = json.loads((tmp_path / "out" / "scorecard.json").read_text())["models"]["A 2.0"]["passes"]
    assert passes["bias field"] is None  # not measured
    assert "bias field -" in (tmp_path / "out" / "scorecard.md").read_text()
    write(tmp_path / "two", {"A 2.0": {"ct": (0.50, 0.78), "mr": 0.70, "lits": 0.78, "kidney": (0.70, 0.74)}})
    with pytest.raises(SystemExit, match="another result file says"):
        script.main(["--results", str(tmp_path / "one"), "--results", str(tmp_path / "two"), "--default", "D 1.0",
                     "--out", str(tmp_path / "out2")])
    with pytest.raises(SystemExit, match="in none of the result files"):
        script.main(["--results", str(tmp_path / "one"), "--default", "X 9.9", "--out", str(tmp_path / "out3")])


def test_voxel_sizes_are_shown_beside_the_rules_and_judge_nothing(tmp_path):
    script = load_script("training/scorecard.py")
    write(tmp_path / "r", BOTH_PASS_THE_BIAS_FIELD)
    script.main(["--results", str(tmp_path / "r"), "--default", "D 1.0", "--out", str(tmp_path / "plain")])
    assert "times its voxel size" not in (tmp_path / "plain" / "scorecard.md").read_text()  # no file, no column
    spread = [{"bundle": "a.zip", "model": "A 2.0", "scales": [0.9, 1.0, 1.1],
               "dice": {"abdomen_mr_01": {"liver": {"by_scale": [0.5, 0.7, 0.6]}},
                        "chest_abdomen_ct_02": {"liver": {"by_scale": [0.9, 0.92, 0.9]}, "spleen": {"by_scale": [0.0, 0.78, 0.5]}}}},
              {"bundle": "old.zip", "scales": [0.9, 1.0], "dice": {}}]  # written before models were named: skipped
    (tmp_path / "r" / "voxel-sizes").mkdir()
    (tmp_path / "r" / "voxel-sizes" / "voxel_sizes.json").write_text(json.dumps(spread))
    script.main(["--results", str(tmp_path / "r"), "--default", "D 1.0", "--out", str(tmp_path / "out")])
    models = json.loads((tmp_path / "out" / "scorecard.json").read_text())["models"]
    assert models["A 2.0"]["voxel sizes"]["means"]["chest_abdomen_ct_02"] == [0.45, 0.85, 0.7]
    assert models["A 2.0"]["passes"] == json.loads((tmp_path / "plain" / "scorecard.json").read_text())["models"]["A 2.0"]["passes"]
    text = (tmp_path / "out" / "scorecard.md").read_text()
    assert "| mean Dice at 0.9 / 1 / 1.1 times its voxel size (not a rule) |" in text
    assert "| chest_abdomen_ct_02: 0.450 / 0.850 / 0.700; abdomen_mr_01: 0.500 / 0.700 / 0.600 |" in text
    assert "(the default) | - |" in text  # the default was not run at other sizes


def test_rival_pieces_are_listed_under_the_table_and_judge_nothing(tmp_path):
    script = load_script("training/scorecard.py")
    write(tmp_path / "r", BOTH_PASS_THE_BIAS_FIELD)
    script.main(["--results", str(tmp_path / "r"), "--default", "D 1.0", "--out", str(tmp_path / "plain")])
    assert "dropped piece" not in (tmp_path / "plain" / "scorecard.md").read_text()  # older result files: nothing said
    rows = json.loads((tmp_path / "r" / "real_scans.json").read_text())
    for r in rows:
        r["rival_pieces"] = {"kidney_left": [51.2, 42.0]} if (r["bundle"], r["role"]) == ("A 2.0", "validation") else {}
    (tmp_path / "r" / "real_scans.json").write_text(json.dumps(rows))
    script.main(["--results", str(tmp_path / "r"), "--default", "D 1.0", "--out", str(tmp_path / "out")])
    text = (tmp_path / "out" / "scorecard.md").read_text()
    assert text.rstrip().endswith("`A 2.0` validation CT: kidney_left 51 / 42 mL.")
    models = json.loads((tmp_path / "out" / "scorecard.json").read_text())["models"]
    assert models["A 2.0"]["passes"] == json.loads((tmp_path / "plain" / "scorecard.json").read_text())["models"]["A 2.0"]["passes"]


def test_rows_scored_under_the_next_class_rule_are_another_model(tmp_path):
    """One model scored under both ``dropped_pieces`` choices in one folder (``training/reports/dropped-pieces/``):
    two rows of the card, not a conflict; a row without the choice was scored under background. Rows of the
    network at another voxel size are not read."""
    script = load_script("training/scorecard.py")
    write(tmp_path / "r", BOTH_PASS_THE_BIAS_FIELD)
    rows = json.loads((tmp_path / "r" / "real_scans.json").read_text())
    relabelled = [{**r, "dropped_pieces": "next_class", "metrics": {o: {"dice": 0.95} for o in r["metrics"]}}
                  for r in rows if r["bundle"] == "A 2.0"]
    coarser = [{**r, "voxel_scale": 1.1, "metrics": {o: {"dice": 0.1} for o in r["metrics"]}} for r in rows]  # judged by none
    (tmp_path / "r" / "real_scans.json").write_text(json.dumps(rows + relabelled + coarser))
    assert script.main(["--results", str(tmp_path / "r"), "--default", "D 1.0", "--out", str(tmp_path / "out")]) == 0
    models = json.loads((tmp_path / "out" / "scorecard.json").read_text())["models"]
    assert list(models) == ["D 1.0", "A 2.0", "A 2.0 (dropped pieces: next_class)"]
    assert models["A 2.0 (dropped pieces: next_class)"]["passes"]["validation CT"] is True
