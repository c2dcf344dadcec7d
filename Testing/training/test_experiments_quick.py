"""The method-comparison bench in ``--quick`` mode: report structure, claim lines and the best
method recomputed here from the runs' numbers, and those numbers re-measured from a run's bundle."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest

from Testing.conftest import load_script

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compare_methods():
    """The bench script as a module, nothing run."""
    return load_script("training/experiments/compare_methods.py")


@pytest.fixture(scope="module")
def bench(compare_methods, tmp_path_factory):
    """The quick bench, run once (about 20 s on an idle 2-core machine): its module and results folder."""
    root = tmp_path_factory.mktemp("bench")
    out = root / "results"
    assert compare_methods.main(["--quick", "--out", str(out), "--work", str(root / "work")]) == 0
    return compare_methods, out


def _runs(out: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((out / "runs" / "scarce_mr_1").glob("*.json"))}


def _organ_mean(run: dict, modality: str, organ: str, kind: str = "phantom") -> float:
    values = [c["metrics"][organ]["dice"] for c in run["results"].values() if c["kind"] == kind and c["modality"] == modality]
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else float("nan")


@pytest.mark.slow
def test_report_structure_and_files(bench):
    module, out = bench
    report = (out / "report.md").read_text()
    for heading in (
        "## Set-up, and what this does and does not show",
        "## Best method",
        "## Scenario `scarce_mr_1`",
        "### Does joint training beat `individual` on MR?",
        "### Dice, held-out phantoms",
        "### ASSD (mm), held-out phantoms",
        "### Dice, real scans (pseudo-labels)",
        "### ASSD (mm), real scans (pseudo-labels)",
        "## Time",
        "## Regenerate",
    ):
        assert heading in report, heading
    assert "python training/experiments/compare_methods.py --quick" in report
    assert "Runs finished: 2 of 2" in report
    png = out / "boxplot_scarce_mr_1.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["runs_done"] == 2 and summary["cpu_s"] > 0
    assert set(summary["runs"]["scarce_mr_1"]) == set(module.QUICK.methods)
    # one Dice row per method in every table, organ x modality columns + 3 means
    rows = [line for line in report.splitlines() if line.startswith("| `individual` |") and line.count("|") == 13]
    assert len(rows) == 4  # Dice and ASSD, phantoms and real scans


@pytest.mark.slow
def test_claim_lines_and_best_method_follow_from_the_numbers(bench):
    module, out = bench
    report = (out / "report.md").read_text()
    runs = _runs(out)
    organs = [o for o in module.ORGANS]
    lines = [line for line in report.splitlines() if line.startswith("- `") and "beats `individual` on MR Dice" in line]
    assert [re.match(r"- `(\w+)`", line).group(1) for line in lines] == ["ummkd"]
    for line in lines:
        method = re.match(r"- `(\w+)`", line).group(1)
        ours = {o: _organ_mean(runs[method], "MR", o) for o in organs}
        base = {o: _organ_mean(runs["individual"], "MR", o) for o in organs}
        m, b = np.nanmean(list(ours.values())), np.nanmean(list(base.values()))
        assert f"**{'yes' if m > b else 'no'}**" in line
        assert f"mean {m:.3f} vs {b:.3f}" in line
        for o in organs:
            assert f"{o} {ours[o]:.3f} vs {base[o]:.3f}" in line
    def overall(run: dict, kind: str) -> float:  # mean of the modality means present (the quick bench's real scan is MR)
        means = [np.nanmean([_organ_mean(run, mod, o, kind) for o in organs]) for mod in ("CT", "MR")]
        return float(np.nanmean(means))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the mean of a modality with no real scan is NaN
        real = {name: overall(run, "real") for name, run in runs.items()}
        phantom = {name: overall(run, "phantom") for name, run in runs.items()}
    top = max(round(v, 3) for v in real.values())  # real scans decide
    best = [m for m in module.METHOD_ORDER if m in real and round(real[m], 3) == top]
    if len(best) == 1:
        assert f"**Best method by this criterion: `{best[0]}`** (mean Dice {top:.3f})." in report
    else:
        winner = max(best, key=lambda m: phantom[m])  # the phantoms break a tie on the real scans
        assert f"**Best method by this criterion: `{winner}`**: " in report and " tie on the real scans at " in report


@pytest.mark.slow
def test_numbers_come_from_the_run(bench):
    """Re-segment the real MR scan with a run's bundle and recompute its Dice here in NumPy."""
    from MultiModalSegLib.inference.segmenter import Segmenter
    from MultiModalSegLib.io import read_image, read_labelmap

    module, out = bench
    run = _runs(out)["ummkd"]
    case = run["results"]["abdomen_mr_01"]
    assert case["kind"] == "real" and case["modality"] == "MR"
    folder = REPO / "Resources" / "SampleData" / "abdomen_mr_01"
    volume = read_image(folder / "image.nii.gz")
    pred = Segmenter(run["bundle"], device="cpu", amp=False).segment(volume, "MR").labels.array
    ref = read_labelmap(folder / "label_totalseg.nii.gz").array
    totalseg_ids = {"liver": 5, "spleen": 1, "kidney_right": 2, "kidney_left": 3}  # Resources/SampleData/README.md
    for lab in module.ABDOMEN_LABELS:
        p, r = pred == lab.value, ref == totalseg_ids[lab.name]
        denom = p.sum() + r.sum()
        expected = None if denom == 0 else 2 * np.logical_and(p, r).sum() / denom
        got = case["metrics"][lab.name]["dice"]
        assert (got is None) == (expected is None)
        if expected is not None:
            assert got == pytest.approx(expected, abs=1e-6)
    assert run["steps"] == module.QUICK.steps and run["train_cpu_s"] > 0


@pytest.mark.slow
def test_readme_block_is_the_report_ranking(bench, tmp_path):
    module, out = bench
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\ntext before\n\n{module.README_BEGIN}\nold\n{module.README_END}\n\ntext after\n")
    assert module.update_readme(out, readme)
    text = readme.read_text()
    block = text.split(module.README_BEGIN)[1].split(module.README_END)[0]
    report = (out / "report.md").read_text()
    ranking = [line for line in block.splitlines() if line.startswith("|") or line.startswith("**")]
    assert len(ranking) == 2 + 2 + 1  # header, rule, two methods, best line
    assert all(line in report.splitlines() for line in ranking)
    assert text.startswith("# Title\n\ntext before\n\n") and text.endswith("\n\ntext after\n") and "old" not in block
    assert not module.update_readme(out, readme)  # nothing left to change


def test_committed_readme_blocks_are_the_committed_reports(compare_methods, tmp_path):
    """The README's method-comparison and method-selection blocks are what the committed results give."""
    module = compare_methods
    readme = tmp_path / "README.md"
    readme.write_text((REPO / "README.md").read_text(encoding="utf-8"), encoding="utf-8")
    for out, markers in ((module.RESULTS, (module.README_BEGIN, module.README_END)),
                         (module.RESULTS_SELECTION, module.SELECTION_MARKERS)):
        assert markers[0] in readme.read_text()
        assert not module.update_readme(out, readme, markers), f"stale README block: rerun {out} --report-only"


def test_every_bench_run_is_a_valid_training_config_and_lssc_gets_its_recipe(tmp_path):
    """Without running anything: each (bench, method) config loads, and the selection bench trains
    ``lssc`` with its recipe (``training/configs/abdomen_lssc.json``: warm-up, rate, pretraining)."""
    from MultiModalSegLib.methods import METHODS
    from MultiModalSegLib.training.config import config_from_dict, load_config

    module = load_script("training/experiments/compare_methods.py", "compare_methods_configs")
    assert set(module.METHOD_ORDER) == set(METHODS)  # every registered method is benched
    for bench in (module.FULL, module.SELECTION):
        for method in module.METHOD_ORDER:
            config_from_dict(module.run_config(bench, module.SCENARIOS["balanced"], method, tmp_path / "dataset.json"))
    lssc = config_from_dict(module.run_config(module.SELECTION, module.SCENARIOS["balanced"], "lssc", tmp_path / "dataset.json"))
    recipe = load_config(REPO / "training" / "configs" / "abdomen_lssc.json")
    assert lssc.pretrain == recipe.pretrain and lssc.lr == recipe.lr
    assert lssc.schedule["warmup_steps"] == recipe.schedule["warmup_steps"]


def test_a_longer_bench_neither_counts_nor_skips_the_runs_of_a_shorter_one(compare_methods, tmp_path):
    """A results folder holding runs of a 1000-step bench: at 2500 steps they are neither in the
    report's runs nor taken as finished (so the bench reruns them); a failed run counts for the
    budget it failed under."""
    module = compare_methods
    runs = tmp_path / "runs" / "balanced"
    runs.mkdir(parents=True)
    (runs / "cmc.json").write_text(json.dumps({"scenario": "balanced", "method": "cmc", "steps": 1000, "results": {}}))
    (runs / "lssc.json").write_text(json.dumps({"scenario": "balanced", "method": "lssc", "failed": "NaN loss",
                                                "bench_steps": 2500}))
    assert module.load_runs(tmp_path, steps=1000) == {"balanced": {"cmc": json.loads((runs / "cmc.json").read_text())}}
    assert module.load_runs(tmp_path, steps=2500) == {}
    assert list(module.load_runs(tmp_path, failed=True, steps=2500)["balanced"]) == ["lssc"]
    assert module.is_finished(tmp_path, "balanced", "cmc", 1000)
    assert not module.is_finished(tmp_path, "balanced", "cmc", 2500)
    assert module.is_finished(tmp_path, "balanced", "lssc", 2500)
    assert not module.is_finished(tmp_path, "balanced", "mulmodseg", 2500)
