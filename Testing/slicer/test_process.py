"""The module's subprocesses: no console window on Windows, a process group, output that cannot be
decoded does not stop the job, a failure of the finishing step ends the job, and a cancelled
training writes its checkpoint first."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import pytest
from MultiModalSegModuleLib import process, train_logic

from Testing.slicer.conftest import REPO

PACKAGE = REPO / "MultiModalSeg" / "MultiModalSegModuleLib"


def test_windows_children_get_no_console_window_and_their_own_group():
    flags = process.popen_kwargs("nt")["creationflags"]
    assert flags & 0x08000000 and flags & 0x00000200  # CREATE_NO_WINDOW, CREATE_NEW_PROCESS_GROUP
    assert process.popen_kwargs("posix")["start_new_session"] is True
    for platform in ("nt", "posix"):
        assert process.popen_kwargs(platform)["errors"] == "replace"


def test_every_subprocess_of_the_module_goes_through_popen_kwargs():
    sources = {p.name: p.read_text(encoding="utf-8") for p in PACKAGE.glob("*.py")}
    sources["MultiModalSeg.py"] = (REPO / "MultiModalSeg" / "MultiModalSeg.py").read_text(encoding="utf-8")
    pattern = r"subprocess\.(?:Popen|run|call|check_call|check_output)\("
    calls = {name: [text[m.start():m.start() + 300] for m in re.finditer(pattern, text)] for name, text in sources.items()}
    assert {name for name, found in calls.items() if found} == {"process.py"}
    assert len(calls["process.py"]) == 3 and all("**popen_kwargs()" in call for call in calls["process.py"])
    assert "taskkill\", \"/T\", \"/PID\"" in sources["process.py"]  # a polite stop before /F


class _Echo(process.ProcessJob):
    def __init__(self, code: str, finish=None):
        self.progress = lambda fraction, message: None
        self.out: list[str] = []
        self._finish_hook = finish
        self._launch([sys.executable, "-c", code])

    def _on_output(self, line: str) -> None:
        self.out.append(line)

    def _finish(self) -> None:
        if self._finish_hook:
            self._finish_hook()


def test_undecodable_output_is_replaced_not_fatal():
    job = _Echo("import sys; sys.stdout.buffer.write(b'ok \\xff\\xfe end\\n'); sys.stderr.buffer.write(b'\\xc3(\\n')")
    job.wait()
    assert job.state == "done"
    assert job.out == ["ok \ufffd\ufffd end"] and job.stderr == ["\ufffd("]


def test_an_error_while_finishing_ends_the_job_with_one_sentence():
    def full_disk():
        raise OSError(28, "No space left on device")

    job = _Echo("print('done')", finish=full_disk)
    deadline = time.monotonic() + 30
    with pytest.raises(process.SegmentationError, match="could not be used .*No space left"):
        while not job.poll():
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert job.state == "failed" and job.poll() is True  # ended: the panel's timer stops


def test_cancelled_training_is_asked_to_stop_before_it_is_killed(tmp_path: Path):
    """A stand-in training process that honours the STOP file as ``mmseg finetune`` does."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    script = (
        "import pathlib, sys, time\n"
        f"run = pathlib.Path({str(run)!r})\n"
        "while not (run / 'STOP').exists(): time.sleep(0.05)\n"
        "(run / 'checkpoints' / 'last.pt').write_text('checkpoint')\n"
        f"sys.exit({train_logic.STOPPED_EXIT_CODE})\n"
    )
    job = train_logic.TrainingJob(None, [sys.executable, "-c", script], run, tmp_path / "new.zip", "new", install=False)
    job.cancel(grace=30)
    assert job.state == "stopped" and job.checkpointPath.read_text() == "checkpoint"
