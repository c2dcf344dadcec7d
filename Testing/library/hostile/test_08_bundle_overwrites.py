"""Item 8: bundles are never replaced silently: ``models export`` onto an existing file,
``train --bundle`` onto an existing bundle, and rerunning a finished run's command."""

from __future__ import annotations

import json

from conftest import tiny_config

from MultiModalSegLib.bundle import bundle_sha256, load_bundle
from Testing.library.hostile.helpers import manifest_with, one_error, run, snapshot, tiny_zip


def test_export_onto_an_existing_file_is_refused(tmp_path, capsys):
    manifest = manifest_with(tmp_path, "tiny", tiny_zip(tmp_path / "Models" / "tiny.zip"))
    dest = tmp_path / "usb" / "tiny.zip"
    dest.parent.mkdir()
    dest.write_bytes(b"the user's own file")
    code, _, err = run(["models", "export", "tiny", dest, "--manifest", manifest], capsys)
    assert code == 1
    one_error(err, "tiny.zip", "already exists", "--overwrite")
    assert dest.read_bytes() == b"the user's own file"
    code, _, err = run(["models", "export", "tiny", dest, "--manifest", manifest, "--overwrite"], capsys)
    assert code == 0, err
    assert bundle_sha256(dest) == bundle_sha256(tmp_path / "Models" / "tiny.zip")


def _config(tmp_path, phantom_dir, **overrides):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(tiny_config(phantom_dir, steps=2, checkpoint_every=2, validate_every=1, **overrides)))
    return path


def test_train_bundle_onto_an_existing_bundle_is_refused_before_training(tmp_path, capsys, phantom_dir):
    existing = tiny_zip(tmp_path / "mine.zip")
    before = snapshot(tmp_path)
    run_dir = tmp_path / "run"
    code, _, err = run(["train", "--config", _config(tmp_path, phantom_dir), "--out", run_dir, "--bundle", existing, "--quiet"], capsys)
    assert code == 1
    one_error(err, "mine.zip", "already exists", "--overwrite")
    assert not run_dir.exists()  # refused before training started
    assert {k: v for k, v in snapshot(tmp_path).items() if k != "tiny.json"} == before


def test_rerunning_a_finished_run_keeps_its_bundle_and_metrics(tmp_path, capsys, phantom_dir):
    config, run_dir, copy = _config(tmp_path, phantom_dir), tmp_path / "run", tmp_path / "copy.zip"
    args = ["train", "--config", config, "--out", run_dir, "--bundle", copy, "--quiet"]
    code, _, err = run(args, capsys)
    assert code == 0, err
    first = load_bundle(run_dir / "bundle").metadata
    assert first["metrics"]["validation_dice"]
    before = snapshot(tmp_path)
    code, out, err = run(args, capsys)  # the same command again
    assert code == 0, err
    assert "already there" in out
    def files(snap):  # the progress log records the rerun; nothing else may change
        return {k: v for k, v in snap.items() if not k.endswith("progress.jsonl")}

    assert files(snapshot(tmp_path)) == files(before)
    assert load_bundle(run_dir / "bundle").metadata["metrics"] == first["metrics"]
