"""``mmseg finetune``: STOP -> exit 3 -> the same command resumes -> exit 0 with the table; clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from MultiModalSegLib.bundle import load_bundle
from MultiModalSegLib.cli import main
from MultiModalSegLib.training import Trainer
from MultiModalSegLib.training.progress import read_progress


def _command(parent: Path, data: Path, out: Path, run: Path, *extra: str) -> list[str]:
    return ["finetune", "--init", str(parent), "--data", str(data), "--out", str(out), "--run", str(run), "--steps", "2",
            "--lr", "1e-3", "--phantoms", "0", "--heldout-phantoms", "0", "--device", "cpu", "--threads", "2", "--quiet", *extra]  # fmt: skip


def test_stop_then_resume_with_the_same_command(tiny_bundle, phantom_dir, tmp_path, monkeypatch, capsys):
    out, run = tmp_path / "tiny-mr1", tmp_path / "run"
    command = _command(tiny_bundle, phantom_dir, out, run, "--few-shot", "MR=1")
    original = Trainer.train_step

    def step_then_stop(self):  # a STOP file appears during the first step, as the Slicer panel writes it
        losses = original(self)
        (self.out / "STOP").touch()
        return losses

    monkeypatch.setattr(Trainer, "train_step", step_then_stop)
    assert main(command) == 3
    printed = capsys.readouterr().out
    assert json.loads(printed.splitlines()[0])["status"] == "stopped" and "run the same command again" in printed
    assert (run / "checkpoints" / "last.pt").is_file() and not out.exists()
    monkeypatch.setattr(Trainer, "train_step", original)

    assert main(command) == 0
    printed = capsys.readouterr().out
    assert "| held-out | modality | cases | organ | Dice before | Dice after | change |" in printed
    events = read_progress(run / "progress.jsonl")
    kinds = [e["event"] for e in events]
    assert kinds.count("stopped") == 1 and kinds.count("evaluation") == 2  # "before" computed once, reused on resume
    starts = [e["step"] for e in events if e["event"] == "start"]
    assert starts == [0, 1] and kinds[-1] == "finetuned"
    bundle = load_bundle(out)
    assert bundle.metadata["training"]["steps"] == 2 and bundle.metadata["training"]["finetune"]["few_shot"] == {"MR": 1}
    assert (tmp_path / "tiny-mr1.finetune.md").read_text() in printed

    assert main(command) == 1  # the finished bundle is not replaced without --overwrite
    assert "already exists; choose another path or pass --overwrite" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--few-shot", "MR"], "give NAME=VALUE"),
        (["--few-shot", "MR=one"], "must be an integer"),
    ],
)
def test_bad_arguments(tiny_bundle, phantom_dir, tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as exc:
        main(_command(tiny_bundle, phantom_dir, tmp_path / "o", tmp_path / "r", *extra))
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_errors_are_one_line(tiny_bundle, phantom_dir, tmp_path, capsys):
    assert main(_command(tmp_path / "nope", phantom_dir, tmp_path / "o", tmp_path / "r")) == 1
    err = capsys.readouterr().err
    assert err.startswith("mmseg finetune: error: Model ") and "neither an existing bundle path" in err and err.count("\n") == 1
    assert main(_command(tiny_bundle, phantom_dir, tmp_path / "o", tmp_path / "r", "--method", "individual")) == 1
    assert "do not load into method individual" in capsys.readouterr().err


def test_run_dir_passes_through_torchrun_and_both_spellings_name_the_run_folder():
    import argparse

    from torch.distributed.run import get_args_parser

    from MultiModalSegLib.cli import finetune

    launch = get_args_parser().parse_args(["--nproc-per-node", "2", "-m", "MultiModalSegLib", "finetune", "--run-dir", "R"])
    assert launch.training_script_args == ["finetune", "--run-dir", "R"]
    parser = argparse.ArgumentParser()
    finetune.register(parser.add_subparsers())
    for spelling in ("--run-dir", "--run"):
        args = parser.parse_args(["finetune", "--init", "P", "--data", "D", "--out", "O", spelling, "R"])
        assert args.run == "R"
