"""What the README tells a new user to run holds together: the Train section's phantom command writes
the data set its next command trains on, the Python example saves a result, and every folder its
commands create inside the repository is git-ignored."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

from MultiModalSegLib.training import load_config

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, re.S)


def _commands() -> list[list[str]]:
    """Every ``mmseg`` / ``torchrun`` command of the README's bash blocks, as argument lists."""
    out = []
    for block in _blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith(("mmseg ", "torchrun ")):
                out.append(shlex.split(line))
    return out


def test_the_phantom_command_writes_what_the_next_train_command_uses():
    section = README.split("### Train")[1].split("```bash")[1].split("```")[0]
    lines = [shlex.split(line.split("  #")[0]) for line in section.strip().splitlines()]
    phantom, train = lines[0], lines[1]
    assert phantom[:2] == ["mmseg", "phantom"] and train[:2] == ["mmseg", "train"]
    written = (REPO / phantom[phantom.index("--out") + 1] / "dataset.json").resolve()
    config = load_config(REPO / train[train.index("--config") + 1])
    assert written in [Path(d["path"] if isinstance(d, dict) else d) for d in config.datasets]
    assert "--steps" in train  # the README shows how to make a run short


def test_the_python_example_saves_a_result():
    example = next(b for b in _blocks("python") if "Segmenter" in b)
    assert "write_segmentation(seg.labels, " in example and "segment_file(" in example
    compile(example, "README.md", "exec")  # valid Python


def _ignored(path: str, patterns: list[str]) -> bool:
    first = Path(path).parts[0]
    return any(p.strip("/") == first or path.startswith(p.rstrip("/") + "/") or path.rstrip("/") == p.rstrip("/")
               for p in patterns)  # fmt: skip


def test_folders_the_readme_commands_create_are_git_ignored():
    patterns = [line.strip() for line in (REPO / ".gitignore").read_text().splitlines() if line.strip() and not line.startswith("#")]
    created = set()
    for args in _commands():
        for option in ("--out", "--output", "-o"):
            if option in args:
                created.add(args[args.index(option) + 1])
        if args[:2] == ["mmseg", "demo"] and "--output" not in args and "-o" not in args:
            created.add("mmseg-demo")
        if args[:2] == ["mmseg", "train"] and "--out" not in args:
            created.add("training/runs/x")
    relative = {c for c in created if not Path(c).is_absolute()}
    assert {"data/phantoms", "training/runs/abdomen-ummkd", "metrics/"} <= relative
    assert [c for c in sorted(relative) if not _ignored(c, patterns)] == []


def test_ci_runs_the_readme_test_command_then_the_slow_tests_time_boxed():
    """``.ci/run`` calls the README's test command as written (every test not marked slow), then the
    ``slow`` tests in a step of their own under a time limit; ``slow`` is a registered marker."""
    section = README.split("**Run the test suite**", 1)[1]
    command = _blocks("bash")[[b in section for b in _blocks("bash")].index(True)].strip()
    assert command.endswith('pytest -q -m "not slow" -n 2 --dist loadscope') and "pip install torch==2.13.0" in command
    lines = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    assert command in lines
    slow = next(line for line in lines if "pytest -v -m slow" in line)
    assert lines.index(slow) > lines.index(command)
    box = re.search(r"timeout --signal=INT --kill-after=\d+ (\d+) ", slow)  # pytest reports where it stopped
    assert box and 600 <= int(box.group(1)) <= 2700  # room for a busy machine, inside CI's 90 minutes
    assert "slow:" in (REPO / "pyproject.toml").read_text()


@pytest.mark.parametrize("failing", ["pip", "ruff", "pytest"])
def test_ci_fails_when_any_part_of_the_readme_command_fails(tmp_path, failing):
    """A failure inside the README command's && chain (set-up, lint or tests) fails the whole CI run,
    even when the slow step after it passes."""
    section = README.split("**Run the test suite**", 1)[1]
    command = _blocks("bash")[[b in section for b in _blocks("bash")].index(True)].strip()
    parts = {"pip": "true", "ruff": "true", "pytest": "true"}
    parts[failing] = "false"
    stand_in = f"true && {parts['pip']} && {parts['ruff']} && {parts['pytest']}"
    script = (REPO / ".ci" / "run").read_text().replace(command, stand_in)
    script = "\n".join("true" if "pytest -v -m slow" in line else line for line in script.splitlines())
    script = script.replace('cd "$(dirname "$0")/.."', "cd .")
    (tmp_path / "run").write_text(script)
    result = subprocess.run(["bash", str(tmp_path / "run")], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode != 0, result.stdout + result.stderr
    passing = script.replace(stand_in, "true && true && true && true")
    (tmp_path / "run").write_text(passing)
    assert subprocess.run(["bash", str(tmp_path / "run")], cwd=tmp_path).returncode == 0
