"""The inference path is free of training code: importing it, or loading a model with it, imports
no method, no loss, no training engine (checked in a fresh interpreter)."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO

TRAINING_CODE = ("MultiModalSegLib.losses", "MultiModalSegLib.methods", "MultiModalSegLib.training")


def imported_after(code: str) -> list[str]:
    """The module names in ``sys.modules`` after running ``code`` in a new interpreter."""
    script = f"import json, sys\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    run = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.splitlines()[-1])


def loaded(modules: list[str], prefixes: tuple[str, ...]) -> list[str]:
    return [m for m in modules if m.startswith(prefixes)]


def test_importing_the_inference_package_imports_no_training_code_and_no_monai():
    modules = imported_after("import MultiModalSegLib.inference")
    assert "MultiModalSegLib.inference.segmenter" in modules  # the probe saw the package
    assert loaded(modules, TRAINING_CODE) == []
    assert loaded(modules, ("monai",)) == []  # MONAI's __init__ imports all of MONAI, monai.losses included


def test_loading_a_model_imports_no_training_code(tiny_bundle):
    # as in an ``mmseg`` process: MONAI loads without the optional packages of monai_start.SKIPPED (its imports, not ours)
    modules = imported_after(
        "from MultiModalSegLib import monai_start\nmonai_start.install()\n"
        f"from MultiModalSegLib.inference import Segmenter\nSegmenter({str(tiny_bundle)!r}, device='cpu')"
    )
    assert "MultiModalSegLib.networks.exported" in modules  # the network was built
    assert loaded(modules, TRAINING_CODE) == []
