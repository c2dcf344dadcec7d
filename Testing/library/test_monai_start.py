"""``mmseg`` processes import MONAI without Hugging Face ``transformers`` and can still import it later."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from types import ModuleType, SimpleNamespace

import pytest
from conftest import REPO

from MultiModalSegLib import monai_start


def fake_monai(initialising: bool) -> ModuleType:
    module = ModuleType("monai")
    module.__spec__ = SimpleNamespace(_initializing=initialising)
    return module


def test_transformers_is_refused_only_while_monai_initialises(monkeypatch):
    finder = monai_start.SkipTransformersWhileMonaiLoads()
    monkeypatch.setitem(sys.modules, "monai", fake_monai(True))
    for name in ("transformers", "transformers.models.bert.modeling_bert"):
        with pytest.raises(ModuleNotFoundError, match="while MONAI initialises"):
            finder.find_spec(name)
    assert finder.find_spec("transformers_extra") is None and finder.find_spec("numpy") is None
    monkeypatch.setitem(sys.modules, "monai", fake_monai(False))
    assert finder.find_spec("transformers") is None  # left to the other finders
    monkeypatch.delitem(sys.modules, "monai")
    assert finder.find_spec("transformers") is None


def test_install_is_once_and_not_after_monai(monkeypatch):
    others = [f for f in sys.meta_path if not isinstance(f, monai_start.SkipTransformersWhileMonaiLoads)]
    monkeypatch.setattr(sys, "meta_path", others)  # as in a new process (the tests' conftest installs it)
    monkeypatch.setitem(sys.modules, "monai", fake_monai(False))
    monai_start.install()  # MONAI is already imported here: nothing to gain
    assert not any(isinstance(f, monai_start.SkipTransformersWhileMonaiLoads) for f in sys.meta_path)
    monkeypatch.delitem(sys.modules, "monai")
    monai_start.install()
    monai_start.install()
    assert [type(f) for f in sys.meta_path].count(monai_start.SkipTransformersWhileMonaiLoads) == 1
    assert isinstance(sys.meta_path[0], monai_start.SkipTransformersWhileMonaiLoads)


def test_the_mmseg_process_imports_monai_whole_but_not_transformers():
    assert importlib.util.find_spec("transformers") is not None  # installed by the test extra (text encoder)
    script = (
        "import importlib.util, sys\n"
        "from MultiModalSegLib.cli import main\n"
        "main([])\n"  # no command: prints the help; the hook is installed as for every command
        "from MultiModalSegLib.networks.unet import *\n"  # the first MONAI import, as loading a model makes it
        "import monai.networks.nets as nets\n"
        "print('RESULT', 'transformers' in sys.modules, hasattr(nets, 'SwinUNETR'),\n"
        "      importlib.util.find_spec('transformers') is not None)\n"
    )
    run = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    result = next(line for line in run.stdout.splitlines() if line.startswith("RESULT"))
    # not imported by MONAI, MONAI's networks all there, and transformers still importable afterwards
    assert result == "RESULT False True True"
