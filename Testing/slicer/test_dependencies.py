"""What Install runs: PyTorch through the PyTorch extension (with the version floor) when it is
there, else pip; Slicer's own packages pinned by a constraints file in every pip command."""

from __future__ import annotations

import importlib.machinery
import sys
import types
from pathlib import Path

from MultiModalSegModuleLib import dependencies as D


def fake_pytorch_extension(monkeypatch, calls: list):
    module = types.ModuleType("PyTorchUtils")
    module.__spec__ = importlib.machinery.ModuleSpec("PyTorchUtils", None)

    class PyTorchUtilsLogic:
        @staticmethod
        def _getPipInstallArguments(forceComputationBackend=None, torchVersionRequirement=None,
                                    torchvisionVersionRequirement=None):
            calls.append(torchVersionRequirement)
            return ["install", "torch" + (torchVersionRequirement or ""), "torchvision"]

    module.PyTorchUtilsLogic = PyTorchUtilsLogic
    monkeypatch.setitem(sys.modules, "PyTorchUtils", module)


def test_torch_through_the_pytorch_extension_with_a_version_floor(monkeypatch):
    calls: list = []
    fake_pytorch_extension(monkeypatch, calls)
    commands = D.install_commands(["torch", "monai"], Path("c.txt"), python="py")
    assert calls == [">=2.3"]
    assert commands == [
        ["py", "-m", "pip", "install", "-c", "c.txt", "light-the-torch>=0.5"],
        ["py", "-m", "light_the_torch", "install", "torch>=2.3", "torchvision", "-c", "c.txt"],
        ["py", "-m", "pip", "install", "-c", "c.txt", "monai>=1.4"],
    ]


def test_without_the_extension_pip_with_the_floor_and_the_constraints():
    assert not D.is_importable("PyTorchUtils")
    assert D.install_commands(["torch"], Path("c.txt"), python="py") == [
        ["py", "-m", "pip", "install", "-c", "c.txt", "torch>=2.3"]]
    assert D.install_commands(["jsonschema"], Path("c.txt"), python="py") == [
        ["py", "-m", "pip", "install", "-c", "c.txt", "jsonschema>=4.0"]]


def test_a_blocked_or_broken_package_counts_as_missing(monkeypatch):
    broken = types.ModuleType("broken_package_for_test")  # in sys.modules without a spec: find_spec raises
    monkeypatch.setitem(sys.modules, "broken_package_for_test", broken)
    assert not D.is_importable("broken_package_for_test")
    assert D.is_importable("numpy")


def test_constraints_pin_slicers_own_packages():
    text = D.constraints_text()
    assert "numpy==" in text and "SimpleITK==" in text and "vtk==9.6.2" in text
