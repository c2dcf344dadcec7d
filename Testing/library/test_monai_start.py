"""``mmseg`` processes import MONAI without the optional packages it would load for parts of it the library
never uses (``transformers``, scikit-learn, ``matplotlib``, ``scipy.signal``) and can still import them later."""

from __future__ import annotations

import importlib.util
import json
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


def test_the_skipped_packages_are_refused_only_while_monai_initialises(monkeypatch):
    finder = monai_start.SkipOptionalImportsWhileMonaiLoads()
    monkeypatch.setitem(sys.modules, "monai", fake_monai(True))
    for name in ("transformers", "transformers.models.bert.modeling_bert", "sklearn.metrics", "matplotlib.pyplot",
                 "scipy.signal", "scipy.signal._signaltools"):
        with pytest.raises(ModuleNotFoundError, match="while MONAI initialises"):
            finder.find_spec(name)
    for name in ("transformers_extra", "numpy", "scipy", "scipy.ndimage", "scipy.signals", "matplotlibx"):
        assert finder.find_spec(name) is None, name
    monkeypatch.setitem(sys.modules, "monai", fake_monai(False))
    assert finder.find_spec("transformers") is None  # left to the other finders
    monkeypatch.delitem(sys.modules, "monai")
    assert finder.find_spec("transformers") is None


def test_install_is_once_and_not_after_monai(monkeypatch):
    others = [f for f in sys.meta_path if not isinstance(f, monai_start.SkipOptionalImportsWhileMonaiLoads)]
    monkeypatch.setattr(sys, "meta_path", others)  # as in a new process (the tests' conftest installs it)
    monkeypatch.setitem(sys.modules, "monai", fake_monai(False))
    monai_start.install()  # MONAI is already imported here: nothing to gain
    assert not any(isinstance(f, monai_start.SkipOptionalImportsWhileMonaiLoads) for f in sys.meta_path)
    monkeypatch.delitem(sys.modules, "monai")
    monai_start.install()
    monai_start.install()
    assert [type(f) for f in sys.meta_path].count(monai_start.SkipOptionalImportsWhileMonaiLoads) == 1
    assert isinstance(sys.meta_path[0], monai_start.SkipOptionalImportsWhileMonaiLoads)


def test_the_mmseg_process_imports_monai_whole_without_the_skipped_packages():
    assert importlib.util.find_spec("transformers") is not None  # installed by the test extra (text encoder)
    assert importlib.util.find_spec("sklearn") is not None  # the same
    script = (
        "import importlib, importlib.util, json, sys\n"
        "from MultiModalSegLib.cli import main\n"
        "main([])\n"  # no command: prints the help; the hook is installed as for every command
        "from MultiModalSegLib.networks.unet import *\n"  # the first MONAI import, as loading a model makes it
        "import monai.networks.nets as nets, monai.transforms as transforms\n"
        "from MultiModalSegLib.monai_start import skipped\n"
        "loaded = sorted(m for m in sys.modules if skipped(m))\n"
        "monai_parts = [hasattr(nets, 'SwinUNETR'), hasattr(transforms, 'Rand3DElasticd'), hasattr(transforms, 'RandBiasFieldd')]\n"
        "later = [importlib.import_module(m).__name__ for m in ('matplotlib.pyplot', 'scipy.signal')]\n"
        "print('RESULT', json.dumps({'loaded': loaded, 'monai': monai_parts, 'later': later,\n"
        "      'findable': [importlib.util.find_spec(m) is not None for m in ('transformers', 'sklearn')]}))\n"
    )
    run = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    result = json.loads(next(line for line in run.stdout.splitlines() if line.startswith("RESULT")).split(" ", 1)[1])
    # none imported by MONAI, MONAI's networks and transforms all there, each still importable afterwards
    assert result == {"loaded": [], "monai": [True, True, True], "later": ["matplotlib.pyplot", "scipy.signal"],
                      "findable": [True, True]}
