"""``training/compare_default_models.py``: two bundles side by side; the summary and the ratios
recomputed here from the per-case numbers it saved."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from Testing.conftest import load_script, tiny_config

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_two_models_side_by_side(phantom_dir, tiny_bundle, tmp_path):
    from MultiModalSegLib.training import Trainer
    from MultiModalSegLib.training.config import config_from_dict

    other = Trainer(config_from_dict(tiny_config(phantom_dir, method="joint", steps=2,
                                                 bundle={"name": "tiny-joint", "version": "2.0.0"})),
                    tmp_path / "run", quiet=True).run().bundle
    module = load_script("training/compare_default_models.py")
    out = tmp_path / "out"
    assert module.main(["--models", str(tiny_bundle), str(other), "--phantoms", "1", "--repeats", "1",
                        "--timed-scans", "abdomen_mr_01",
                        "--out", str(out), "--work", str(tmp_path / "work")]) == 0
    doc = json.loads((out / "comparison.json").read_text())
    old, new = list(doc["results"])
    assert new == "tiny-joint 2.0.0" and old != new
    for name, res in doc["results"].items():
        assert sorted(c["kind"] for c in res.values()) == ["phantom", "phantom"]  # real-scan Dice: evaluate_real_scans
        for modality in ("CT", "MR"):
            organs = [[c["metrics"][o]["dice"] for c in res.values() if c["kind"] == "phantom" and c["modality"] == modality]
                      for o in ("liver", "spleen", "kidney_right", "kidney_left")]
            means = [np.mean([v for v in vals if v is not None]) for vals in organs if any(v is not None for v in vals)]
            assert doc["phantom_mean_dice"][name][modality] == pytest.approx(float(np.mean(means)), abs=1e-12)
    assert list(doc["seconds"][new]) == ["abdomen_mr_01"]  # only the scan asked for is timed
    for case, ratio in doc["seconds_ratio_new_over_old"].items():
        assert ratio == round(doc["seconds"][new][case] / doc["seconds"][old][case], 2)
    report = (out / "comparison.md").read_text()
    assert f"`{old}`" in report and f"`{new}`" in report and "Phantoms are not patients" in report
    assert report == module.render_report(doc)
    readme = tmp_path / "README.md"
    begin, end = module.README_MARKERS
    readme.write_text(f"# T\n\n{begin}\nold\n{end}\n\nafter\n")
    assert module.update_readme(doc, readme) and not module.update_readme(doc, readme)
    block = readme.read_text().split(begin)[1].split(end)[0]
    assert all(line in report.splitlines() for line in block.splitlines() if line.startswith("|"))


def test_an_unknown_timed_scan_is_refused_before_any_work(tmp_path, capsys):
    module = load_script("training/compare_default_models.py")
    with pytest.raises(SystemExit) as stop:
        module.main(["--models", str(tmp_path / "a.zip"), str(tmp_path / "b.zip"), "--timed-scans", "my_scan",
                     "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work")])
    assert stop.value.code == 2 and "my_scan" in capsys.readouterr().err and not (tmp_path / "work").exists()


def test_committed_readme_block_is_the_committed_comparison():
    module = load_script("training/compare_default_models.py")
    doc = json.loads((module.OUT / "comparison.json").read_text())
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    begin, end = module.README_MARKERS
    assert readme.split(begin)[1].split(end)[0] == "\n" + "\n".join(module.readme_block(doc)) + "\n", \
        "stale: rerun training/compare_default_models.py"
    assert (module.OUT / "comparison.md").read_text() == module.render_report(doc)
