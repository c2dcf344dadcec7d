"""``mmseg finetune``: STOP -> exit 3 -> the same command resumes -> exit 0 with the table; clear errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from MultiModalSegLib.bundle import load_bundle
from MultiModalSegLib.cli import main
from MultiModalSegLib.training import Trainer
from MultiModalSegLib.training.progress import read_progress
from Testing.conftest import TORCH_THREADS


def _command(parent: Path, data: Path, out: Path, run: Path, *extra: str) -> list[str]:
    return ["finetune", "--init", str(parent), "--data", str(data), "--out", str(out), "--run", str(run), "--steps", "2",
            "--lr", "1e-3", "--phantoms", "0", "--heldout-phantoms", "0", "--device", "cpu", "--threads", str(TORCH_THREADS), "--quiet",
            "--parent-data", "no", "--keep-worse", *extra]  # fmt: skip


def test_stop_then_resume_with_the_same_command(tiny_bundle, phantom_dir, tmp_path, monkeypatch, capsys):
    out, run = tmp_path / "tiny-mr1", tmp_path / "run"
    command = _command(tiny_bundle, phantom_dir, out, run, "--few-shot", "MR=1")
    original = Trainer.train_step

    def step_then_stop(self, *batches):  # a STOP file appears during the first step, as the Slicer panel writes it
        losses = original(self, *batches)
        (self.out / "STOP").touch()
        return losses

    monkeypatch.setattr(Trainer, "train_step", step_then_stop)
    assert main(command) == 3
    printed = capsys.readouterr().out
    assert printed.startswith("stopped at step 1; run the same command again")  # text for a person, no raw JSON
    assert (run / "checkpoints" / "last.pt").is_file() and not out.exists()
    monkeypatch.setattr(Trainer, "train_step", original)

    assert main([*command, "--progress"]) == 0  # the same run; --progress: stdout is JSON lines only
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert lines[0]["event"] == "plan" and lines[-1]["event"] == "result" and lines[-1]["status"] == "done"
    assert {"task": "training", "done": 2, "total": 2} .items() <= [e for e in lines if e["event"] == "progress"][-1].items()
    printed = captured.err  # the table, for a person, on stderr
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


@pytest.mark.slow
def test_a_worse_model_is_not_saved_without_keep_worse(phantom_dir, tmp_path, capsys):
    """The tiny CT+MR model that segments phantoms, fine-tuned 2 steps at an absurd rate, loses Dice on
    the held-out phantoms: the command says so loudly, saves nothing and exits 1; the same command
    with --keep-worse reuses the finished run and saves it, recording the loss in its metrics."""
    parent = Path(__file__).parents[1] / "training" / "data" / "tiny-ctmr-ummkd"
    out, run = tmp_path / "worse.zip", tmp_path / "run"
    command = ["finetune", "--init", str(parent), "--data", str(phantom_dir), "--out", str(out), "--run", str(run),
               "--steps", "2", "--lr", "0.3", "--phantoms", "0", "--heldout-phantoms", "1", "--parent-data", "no",
               "--device", "cpu", "--threads", str(TORCH_THREADS), "--quiet"]  # fmt: skip
    assert main(command) == 1
    captured = capsys.readouterr()
    assert "WARNING: the new model is WORSE than its parent on the held-out cases (mean Dice " in captured.err
    assert re.search(r"phantoms (CT|MR) \d\.\d{3} -> \d\.\d{3} \(-\d\.\d{3}\)", captured.err)
    assert "it was NOT saved" in captured.err and "--keep-worse" in captured.err
    assert "| phantoms | CT | 1 | **mean** |" in captured.out and not out.exists()
    assert (run / "finetune-table.md").is_file()
    assert main([*command, "--keep-worse"]) == 0
    assert "saved because of --keep-worse" in capsys.readouterr().err
    bundle = load_bundle(out)
    assert bundle.metadata["metrics"]["worse_than_parent"] and bundle.metadata["training"]["finetune"]["lr"] == 0.3
    kinds = [e["event"] for e in read_progress(run / "progress.jsonl")]
    assert kinds.count("refused") == 1 and kinds[-1] == "finetuned"
