"""``mmseg train``: the plan and bars on stderr, a validation table (not a raw JSON line) on stdout,
JSON lines only with ``--progress``, and a bundle that never takes a models-manifest name."""

from __future__ import annotations

import json
import re

from conftest import tiny_config

from MultiModalSegLib.bundle import load_bundle
from MultiModalSegLib.cli import main
from MultiModalSegLib.models import load_manifest
from MultiModalSegLib.provenance import path_like_strings, provenance_sections


def test_train_output_and_a_name_of_its_own(tmp_path, capsys, phantom_dir):
    shipped = load_manifest()[0]
    config = tmp_path / "recipe.json"
    bundle = {"name": shipped.name, "version": shipped.version, "description": shipped.description}
    config.write_text(json.dumps(tiny_config(phantom_dir, steps=2, checkpoint_every=2, validate_every=2, bundle=bundle)))
    run = tmp_path / "run"
    assert main(["train", "--config", str(config), "--out", str(run)]) == 0
    captured = capsys.readouterr()
    # the plan before the work, then a bar per task (plain lines when stderr is not a terminal)
    assert captured.err.startswith(f"training {shipped.name}: method ummkd, 2 steps, batch 2 per modality (CT, MR)")
    assert "reading training cases: 2/2" in captured.err and "training: 2/2 loss " in captured.err
    # the result for a person: the last validation Dice as a table
    assert captured.out.startswith("done at step 2; run folder ") and not captured.out.lstrip().startswith("{")
    assert "| modality | liver | spleen | kidney_right | kidney_left | mean |" in captured.out
    assert re.search(r"^\| CT \|( (\d\.\d{3}|-) \|){5}$", captured.out, re.M) and re.search(r"^\| MR \|", captured.out, re.M)
    # a run of a shipped model's recipe is not that model: a name and description of its own
    meta = load_bundle(run / "bundle").metadata
    assert re.fullmatch(rf"{re.escape(shipped.name)}-trained-\d{{8}}-\d{{6}}", meta["name"])
    assert meta["description"].endswith(f"not the model {shipped.name} of the models manifest")
    assert f"(model {meta['name']})" in captured.out
    # provenance: data sets by name and sha256, the recipe by file name; no path
    assert path_like_strings(provenance_sections(meta)) == []
    assert meta["training"]["config_file"] == "recipe.json" and "path" not in meta["training"]["config"]["datasets"][0]

    # --progress: stdout holds JSON lines only (the finished run is reused), the text goes to stderr
    assert main(["train", "--config", str(config), "--out", str(run), "--progress"]) == 0
    captured = capsys.readouterr()
    events = [json.loads(line) for line in captured.out.splitlines()]
    assert events[0]["event"] == "plan" and events[0]["steps"] == 2
    assert events[-1]["event"] == "result" and events[-1]["status"] == "done" and set(events[-1]["validation"]) == {"CT", "MR"}
    assert {e["event"] for e in events} <= {"plan", "note", "progress", "result"}
    assert "| modality | liver |" in captured.err


def test_threads_from_the_command_line_and_refused_when_negative(tmp_path, capsys, phantom_dir, monkeypatch):
    import MultiModalSegLib.training as training

    config = tmp_path / "recipe.json"
    config.write_text(json.dumps(tiny_config(phantom_dir, steps=2, threads=2)))
    seen = {}

    class Stop(Exception):
        pass

    class RecordingTrainer:
        def __init__(self, cfg, *args, **kwargs):
            seen["threads"] = cfg.threads
            raise Stop

    monkeypatch.setattr(training, "Trainer", RecordingTrainer)
    for argv, expected in (([], 2), (["--threads", "1"], 1), (["--threads", "0"], 0)):
        try:
            main(["train", "--config", str(config), "--out", str(tmp_path / "run"), *argv])
        except Stop:
            pass
        assert seen.pop("threads") == expected
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "run"), "--threads", "-1"]) == 1
    err = capsys.readouterr().err
    assert "threads -1: give 0 (torch's own choice) or a positive number of CPU threads." in err and not seen
    assert not (tmp_path / "run").exists()


def test_a_run_with_weight_average_says_what_its_bundle_holds(tmp_path, capsys, phantom_dir):
    config = tmp_path / "recipe.json"
    network = {"name": "unet3d", "params": {"features": [4, 8, 16], "norm": "modality_instance"}}
    config.write_text(json.dumps(tiny_config(phantom_dir, steps=2, validate_every=2, network=network,
                                             weight_average={"start": 1, "every": 1})))
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert f"holding the mean of the recipe's weight_average; the last step's weights: {tmp_path / 'run' / 'bundle_last_step'}" in out
