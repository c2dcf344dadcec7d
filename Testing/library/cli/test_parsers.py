"""The command line's vocabulary, checked on the parsers themselves: every command and option is
described, every option that takes a value states its default, the same words mean the same
thing on every command (``--output``/``-o`` with ``--out`` as an alias, ``--device``), and
``mmseg --version`` answers."""

from __future__ import annotations

import argparse
import re

import pytest

from MultiModalSegLib import __version__
from MultiModalSegLib.cli import build_parser, main
from MultiModalSegLib.device import DEVICE_CHOICES

NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e-?\d+)?")


def parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ("mmseg",)):
    """Every (command path, parser) pair under ``parser``, sub-commands of sub-commands included."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from parsers(sub, (*path, name))


ALL = list(parsers(build_parser()))
COMMANDS = [(" ".join(path), p) for path, p in ALL if len(path) > 1 and not any(
    isinstance(a, argparse._SubParsersAction) for a in p._actions)]  # fmt: skip


def options(parser: argparse.ArgumentParser):
    return [a for a in parser._actions if not isinstance(a, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction))]


def test_the_walk_reaches_every_command():
    names = {name for name, _ in COMMANDS}
    assert {"mmseg segment", "mmseg demo", "mmseg evaluate", "mmseg train", "mmseg finetune", "mmseg phantom",
            "mmseg detect", "mmseg models list", "mmseg models download", "mmseg models trust"} <= names  # fmt: skip


@pytest.mark.parametrize("name, parser", [(" ".join(path), p) for path, p in ALL if len(path) > 1], ids=lambda v: v if isinstance(v, str) else "")
def test_every_command_has_a_description(name, parser):
    assert parser.description and len(parser.description) > 20, f"{name} has no description"


@pytest.mark.parametrize("name, parser", COMMANDS, ids=lambda v: v if isinstance(v, str) else "")
def test_every_option_has_help_stating_its_default(name, parser):
    """Options that take a value and are not required say their default in their help, and a plain
    number or word default appears there as it is (a stale help text fails). Flags (on/off) need
    only a help text: their default is off."""
    for action in options(parser):
        flag = action.option_strings[0] if action.option_strings else action.dest
        assert action.help and action.help != argparse.SUPPRESS, f"{name} {flag} has no help"
        if not action.option_strings or action.required or action.nargs == 0:
            continue
        assert "default" in action.help, f"{name} {flag}: its help does not state the default"
        default = action.default
        if isinstance(default, bool) or default is None or isinstance(default, list):
            continue
        if isinstance(default, (int, float)):
            numbers = [float(n) for n in NUMBER.findall(action.help)]
            assert float(default) in numbers, f"{name} {flag}: default {default} is not in its help {action.help!r}"
        else:
            assert str(default).strip("./") in action.help, f"{name} {flag}: default {default!r} is not in its help"


@pytest.mark.parametrize("name, parser", COMMANDS, ids=lambda v: v if isinstance(v, str) else "")
def test_one_output_vocabulary(name, parser):
    """Where a command takes --out or --output it takes both, and -o, as one option."""
    for action in options(parser):
        spelled = set(action.option_strings) & {"--out", "--output", "-o"}
        if spelled:
            assert spelled == {"--out", "--output", "-o"}, f"{name}: {action.option_strings}"
            assert action.option_strings[0] == "--output", f"{name}: --output is the documented spelling"
            assert "alias" in action.help


@pytest.mark.parametrize("command", ["segment", "demo", "evaluate", "phantom", "train", "finetune"])
def test_every_command_that_writes_takes_output_and_its_aliases(command):
    parser = dict(COMMANDS)[f"mmseg {command}"]
    action = next(a for a in parser._actions if "--output" in a.option_strings)
    required = {"segment": ["in.nii.gz"], "evaluate": ["--pred", "p", "--ref", "r"], "train": ["--config", "c.json"],
                "finetune": ["--init", "m", "--data", "d"]}.get(command, [])  # fmt: skip
    values = {getattr(parser.parse_args([*required, flag, "dest"]), action.dest) for flag in ("--output", "-o", "--out")}
    assert {str(v) for v in values} == {"dest"}


@pytest.mark.parametrize("name, parser", COMMANDS, ids=lambda v: v if isinstance(v, str) else "")
def test_device_help_lists_every_device(name, parser):
    for action in options(parser):
        if "--device" in action.option_strings:
            for device in DEVICE_CHOICES:
                assert device in action.help, f"{name} --device help does not list {device}"


@pytest.mark.parametrize("name, parser", [(" ".join(path), p) for path, p in ALL], ids=lambda v: v if isinstance(v, str) else "")
def test_every_help_page_renders(name, parser):
    assert parser.format_help().startswith("usage: ")  # a stray % in a help text would raise here


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"mmseg {__version__}"
