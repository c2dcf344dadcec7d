"""``.ci/oldest-python``: the tests under Slicer 5.10's Python, and the report it writes from its run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from Testing.conftest import load_script

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / ".ci" / "oldest-python"


@pytest.fixture(scope="module")
def report_script():
    return load_script(".ci/oldest_python_report.py")


def test_refuses_an_interpreter_that_is_not_python_3_12(tmp_path):
    other = sys.executable if sys.version_info[:2] != (3, 12) else shutil.which("python3.11") or "false"
    env = {**os.environ, "PYTHON312": other, "VENV312": str(tmp_path / "venv")}
    result = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert "is not a Python 3.12" in result.stderr and "PYTHON312" in result.stderr
    assert not (tmp_path / "venv").exists()  # refused before any set-up


def test_the_readme_names_it_and_its_committed_report():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "bash .ci/oldest-python" in readme and "Testing/reports/oldest-python.md" in readme
    assert "Testing/reports/oldest-python.md" in SCRIPT.read_text()
    report = (REPO / "Testing" / "reports" / "oldest-python.md").read_text()
    assert "- interpreter: Python 3.12." in report


def test_the_report_takes_the_summary_and_the_failures_from_the_log(report_script, tmp_path):
    log = ("....F. [100%]\nFAILED Testing/x/test_a.py::test_b - AssertionError\n"
           "= 1 failed, 5 passed, 39 deselected in 12.34s =\n")
    text = report_script.report(log, status=1, seconds=75, commit="abc1234")
    assert "tested commit abc1234" in text
    assert "pytest exit status 1 after 1 min 15 s: **1 failed, 5 passed, 39 deselected in 12.34s**" in text
    assert "- `FAILED Testing/x/test_a.py::test_b - AssertionError`" in text
    assert f"Python {sys.version.split()[0]}" in text
    clean = report_script.report("....\n== 4 passed in 1.00s ==\n", status=0, seconds=5, commit="x")
    assert "**4 passed in 1.00s**" in clean and "Failed:" not in clean
    assert "no pytest summary" in report_script.report("killed\n", status=137, seconds=5, commit="x")
