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
        assert row["as_delivered"][modality] == pytest.approx(check["dice_as_delivered"][modality], nan_ok=True)
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before  # the run folder is read, never written
    config.write_text(json.dumps({**settings, "lr": 0.02}))  # not the recipe the checkpoint was trained with
    with pytest.raises(SystemExit, match="its checkpoint does not match"):
        script.score_checkpoint(run, config)
    text = (tmp_path / "report" / "checkpoint_validation.md").read_text()
    liver = row["every_piece"]["CT"]["liver"], row["largest_piece"]["CT"]["liver"], row["as_delivered"]["CT"]["liver"]
    assert f"| run | 3 | CT | {liver[0]:.3f} -> {liver[1]:.3f} -> {liver[2]:.3f} |" in text
    assert row["normalisation_ensemble"] == {}


def test_a_normalisation_ensemble_scores_the_checkpoint_as_a_bundle_released_with_it(phantom_dir, tmp_path, monkeypatch):
    """The recipe lacks the ensemble, the checkpoint still matches, the MR case is predicted from the mean of
    the normalisations asked for (each pass seen by the network), the CT from one pass."""
    from MultiModalSegLib.training import Trainer, validation
    from MultiModalSegLib.training.config import config_from_dict

    settings = tiny_config(phantom_dir, steps=2)
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(settings))
    Trainer(config_from_dict(settings), tmp_path / "run", quiet=True).run()
    seen = []
    real = validation.predict_logits
    monkeypatch.setattr(validation, "predict_logits", lambda net, image, modality, *a, **k: seen.append(modality) or real(net, image, modality, *a, **k))
    script = load_script("training/checkpoint_validation.py")
    script.main(["--run", f"{tmp_path / 'run'}={config}", "--normalisation-ensemble", "MR=0,0.5,1", "--out", str(tmp_path / "report")])
    [row] = json.loads((tmp_path / "report" / "checkpoint_validation.json").read_text())
    assert row["step"] == 2 and row["normalisation_ensemble"] == {"MR": [0.0, 0.5, 1.0]}
    assert seen.count("MR") == 3 * seen.count("CT") > 0 and len(seen) == 4 * seen.count("CT")  # one validation case of each
    assert "--normalisation-ensemble MR=0,0.5,1" in (tmp_path / "report" / "checkpoint_validation.md").read_text()
    with pytest.raises(SystemExit):
        script.main(["--run", f"{tmp_path / 'run'}={config}", "--normalisation-ensemble", "MR=0", "--out", str(tmp_path / "x")])


def test_a_run_without_a_checkpoint_or_a_config_is_refused(tmp_path, capsys):
    script = load_script("training/checkpoint_validation.py")
    with pytest.raises(SystemExit, match="no checkpoint"):
        script.score_checkpoint(tmp_path, tmp_path / "x.json")
    with pytest.raises(SystemExit):
        script.main(["--run", str(tmp_path), "--out", str(tmp_path / "out")])
    assert "RUN_FOLDER=CONFIG" in capsys.readouterr().err
