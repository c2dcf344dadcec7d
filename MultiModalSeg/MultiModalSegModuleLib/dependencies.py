"""The Python packages the library needs that a stock 3D Slicer lacks, and their installation.

Slicer's Python has numpy, scipy, SimpleITK, vtk and Qt. The library also needs PyTorch, MONAI,
jsonschema and nibabel. :class:`DependencyInstallJob` installs them in the background (the panel
polls it and shows its output): PyTorch through the PyTorch extension (``PyTorchUtils``, which picks
the build for the computer's GPU, with a version floor) when it is installed, else through pip;
everything else through pip. pip always runs with a constraints file pinning Slicer's own numpy,
SimpleITK and vtk, so they are never replaced.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import tempfile
from pathlib import Path

from .process import ProcessJob, ProgressCallback, SegmentationError, slicer_python

TORCH_REQUIREMENT = ">=2.3"
# import name -> pip requirement of what the library's subprocess needs
REQUIRED_PACKAGES = {
    "torch": "torch" + TORCH_REQUIREMENT,
    "monai": "monai>=1.4",
    "scipy": "scipy>=1.10",
    "jsonschema": "jsonschema>=4.0",
    "nibabel": "nibabel>=5.0",
}
# names a user reads in the panel
PACKAGE_TITLES = {"torch": "PyTorch", "monai": "MONAI", "scipy": "SciPy", "jsonschema": "jsonschema", "nibabel": "NiBabel"}
# Slicer's own packages: a dependency install must never replace them.
PROTECTED_PACKAGES = ("numpy", "SimpleITK", "vtk")


def is_importable(name: str) -> bool:
    """Whether ``import name`` would find the package (without importing it)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a broken or blocked package counts as missing
        return False


def missing_packages() -> list[str]:
    """Import names of required packages that Slicer's Python lacks."""
    importlib.invalidate_caches()
    return [name for name in REQUIRED_PACKAGES if not is_importable(name)]


def describe_missing(missing: list[str]) -> str:
    """One sentence for the panel: what is missing and what Install does."""
    titles = ", ".join(PACKAGE_TITLES.get(name, name) for name in missing)
    return (f"MultiModalSeg needs {titles}, which this Slicer does not have yet. Press Install to add them "
            "(a few minutes; PyTorch is a large download). Slicer's own numpy, SimpleITK and vtk are kept.")


def constraints_text() -> str:
    """pip constraints pinning Slicer's own numpy, SimpleITK and vtk to the installed versions."""
    lines = []
    for name in PROTECTED_PACKAGES:
        try:
            lines.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return "\n".join(lines) + "\n"


def pip_install_arguments(missing: list[str], constraints_file: Path) -> list[str]:
    """Arguments of ``pip install`` for the missing packages other than torch, held by the constraints."""
    requirements = [REQUIRED_PACKAGES[name] for name in missing if name != "torch"]
    return ["install", "-c", str(constraints_file), *requirements] if requirements else []


def pytorch_extension_arguments() -> list[str] | None:
    """Arguments of ``light_the_torch`` as the PyTorch extension builds them (with our version
    floor), or None when that extension is not installed."""
    if not is_importable("PyTorchUtils"):
        return None
    try:
        import PyTorchUtils

        args = PyTorchUtils.PyTorchUtilsLogic._getPipInstallArguments(None, TORCH_REQUIREMENT)
    except Exception:  # another version of the extension: its documented default
        args = None
    return list(args) if args else ["install", "torch" + TORCH_REQUIREMENT]


def install_commands(missing: list[str], constraints_file: Path, python: str | None = None) -> list[list[str]]:
    """The commands that install ``missing``, in order (each run in its own subprocess)."""
    python = python or slicer_python()
    commands = []
    if "torch" in missing:
        extension = pytorch_extension_arguments()
        if extension is not None:
            commands.append([python, "-m", "pip", "install", "-c", str(constraints_file), "light-the-torch>=0.5"])
            commands.append([python, "-m", "light_the_torch", *extension, "-c", str(constraints_file)])
        else:
            commands.append([python, "-m", "pip", "install", "-c", str(constraints_file), REQUIRED_PACKAGES["torch"]])
    rest = pip_install_arguments(missing, constraints_file)
    if rest:
        commands.append([python, "-m", "pip", *rest])
    return commands


class DependencyInstallJob(ProcessJob):
    """Runs :func:`install_commands` one after the other in the background.

    ``poll()`` passes every output line to ``log`` (the panel's install log); the job ends
    ``done`` when every command succeeded and the packages import, else it raises
    ``SegmentationError`` once with the failing command's last line.
    """

    def __init__(self, missing: list[str] | None = None, log=None, progress: ProgressCallback | None = None,
                 python: str | None = None):
        self.missing = missing_packages() if missing is None else list(missing)
        self.log = log or (lambda line: None)
        self.progress = progress or (lambda fraction, message: None)
        self.state = "running"
        self.error = None
        self.folder = tempfile.TemporaryDirectory(prefix="MultiModalSeg-install-")
        constraints = Path(self.folder.name) / "constraints.txt"
        constraints.write_text(constraints_text(), encoding="utf-8")
        self.commands = install_commands(self.missing, constraints, python)
        self.index = 0
        self._start_next()

    def _start_next(self) -> None:
        command = self.commands[self.index]
        self.log("$ " + " ".join(command))
        self.progress(self.index / max(1, len(self.commands)), f"installing ({self.index + 1} of {len(self.commands)})")
        self._launch(command, env=None)

    def _on_output(self, line: str) -> None:
        self.log(line)

    def _on_error_output(self, line: str) -> None:
        self.log(line)

    def poll(self) -> bool:
        if self.state == "running":
            self._drain()
            if self.proc.poll() is not None and self.proc.returncode == 0 and self.index + 1 < len(self.commands):
                for reader in self.readers:
                    reader.join(timeout=5)
                self._drain()
                self.index += 1
                self._start_next()
                return False
        return super().poll()

    def _finish(self) -> None:
        if self.proc.returncode != 0:
            last = next((line for line in reversed(self.stderr) if line.strip()), "no message")
            raise SegmentationError(f"Installing the dependencies failed ({last.strip()}); check the network "
                                    "connection and press Install again (the log above has the details).")
        still = [name for name in missing_packages() if name in self.missing]
        if still:
            raise SegmentationError(f"{', '.join(still)} still cannot be imported after installing; restart Slicer "
                                    "and press Install again.")

    def _cleanup(self) -> None:
        self.folder.cleanup()


def install_dependencies(missing: list[str] | None = None, log=print, python: str | None = None) -> list[str]:
    """Install what :func:`missing_packages` reports and wait (the batch script); returns the names installed."""
    missing = missing_packages() if missing is None else list(missing)
    if not missing:
        return []
    DependencyInstallJob(missing, log=log, python=python).wait(poll_seconds=0.2)
    return missing
