"""``training/checkpoint_validation.py``: a run's last checkpoint scored as its in-run check scored it, both
ways, without touching the run folder."""

from __future__ import annotations

import json

import pytest

from Testing.conftest import load_script, tiny_config


def test_the_checkpoint_gives_the_run_s_own_last_check_both_ways(phantom_dir, tmp_path):
    from MultiModalSegLib.training import Trainer
    from MultiModalSegLib.training.config import config_from_dict
    from MultiModalSegLib.training.progress import read_progress

    settings = tiny_config(phantom_dir, steps=3, validate_every=3)
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(settings))
    run = tmp_path / "run"
    Trainer(config_from_dict(settings), run, quiet=True).run()
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    [check] = [r for r in read_progress(run / "progress.jsonl") if r["event"] == "validation"]

    script = load_script("training/checkpoint_validation.py")
    script.main(["--run", f"{run}={config}", "--out", str(tmp_path / "report")])
    [row] = json.loads((tmp_path / "report" / "checkpoint_validation.json").read_text())
    assert row["step"] == 3 and row["cases"] == check["cases"]
    for modality, every in check["dice"].items():
        assert row["every_piece"][modality] == pytest.approx(every, nan_ok=True)
        assert row["largest_piece"][modality] == pytest.approx(check["dice_largest_piece"][modality], nan_ok=True)
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before  # the run folder is read, never written
    config.write_text(json.dumps({**settings, "lr": 0.02}))  # not the recipe the checkpoint was trained with
    with pytest.raises(SystemExit, match="its checkpoint does not match"):
        script.score_checkpoint(run, config)
    text = (tmp_path / "report" / "checkpoint_validation.md").read_text()
    liver = row["every_piece"]["CT"]["liver"], row["largest_piece"]["CT"]["liver"]
    assert f"| run | 3 | CT | {liver[0]:.3f} -> {liver[1]:.3f} |" in text


def test_a_run_without_a_checkpoint_or_a_config_is_refused(tmp_path, capsys):
    script = load_script("training/checkpoint_validation.py")
    with pytest.raises(SystemExit, match="no checkpoint"):
        script.score_checkpoint(tmp_path, tmp_path / "x.json")
    with pytest.raises(SystemExit):
        script.main(["--run", str(tmp_path), "--out", str(tmp_path / "out")])
    assert "RUN_FOLDER=CONFIG" in capsys.readouterr().err
