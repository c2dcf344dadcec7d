"""Logic of the MultiModalSeg Slicer module: MRML volume -> file -> ``mmseg segment`` -> segmentation node.

No Qt here: the Widget, the batch script and the tests all run a segmentation through
``MultiModalSegLogic.start`` (non-blocking job) or ``MultiModalSegLogic.process`` (blocking), so
there is one code path. The network runs in a subprocess with Slicer's own Python
(``python -m MultiModalSegLib segment --progress``): a crash cannot take Slicer down, Slicer never
freezes, and Cancel kills the whole process tree.

Choices the issue leaves open, stated here:
- the input volume is written as NRRD (the volume storage node keeps its exact geometry) into a
  fresh temporary folder, which is removed after success, failure and cancel alike;
- the segmentation node is created only once the result is read, so a failed or cancelled run
  leaves nothing in the scene; an existing output segmentation that already holds segments is
  replaced only when the caller says ``overwrite=True`` (the Widget asks the user first);
- the parameter node is a ``vtkMRMLScriptedModuleNode`` holding plain parameters and node
  references, so a saved scene restores the panel.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

import slicer

MODULE_NAME = "MultiModalSeg"
MODULE_DIR = Path(__file__).resolve().parent

ProgressCallback = Callable[[float, str], None]

# import name -> pip requirement of what the subprocess needs.
REQUIRED_PACKAGES = {
    "torch": "torch",
    "monai": "monai>=1.4",
    "scipy": "scipy>=1.10",
    "jsonschema": "jsonschema>=4.0",
    "nibabel": "nibabel>=5.0",
}
# Slicer's own packages: a dependency install must never replace them.
PROTECTED_PACKAGES = ("numpy", "SimpleITK", "vtk")


class SegmentationError(Exception):
    """A segmentation run that could not be done; the message is one sentence for the user."""


# --------------------------------------------------------------------------- the library


def library_parent() -> Path:
    """Folder holding ``MultiModalSegLib``: beside the module when installed, the repository root
    in a source tree."""
    for folder in (MODULE_DIR, MODULE_DIR.parent):
        if (folder / "MultiModalSegLib" / "__init__.py").is_file():
            return folder
    raise SegmentationError(
        f"MultiModalSegLib was not found beside {MODULE_DIR}; reinstall the MultiModalSeg extension."
    )


def ensure_library_importable() -> None:
    parent = str(library_parent())
    if parent not in sys.path:
        sys.path.insert(0, parent)


# --------------------------------------------------------------------------- dependencies


def missing_packages() -> list[str]:
    """Import names of required packages that Slicer's Python lacks."""
    return [name for name in REQUIRED_PACKAGES if importlib.util.find_spec(name) is None]


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


def install_dependencies(missing: list[str] | None = None, python: str | None = None) -> list[str]:
    """Install what ``missing_packages`` reports; returns the import names installed.

    PyTorch comes from the SlicerPyTorch extension's ``PyTorchUtils`` when it is present (it picks
    the build for the GPU), otherwise from pip; everything else from pip with a constraints file
    so that Slicer's numpy, SimpleITK and vtk are never replaced.
    """
    missing = missing_packages() if missing is None else list(missing)
    if not missing:
        return []
    if "torch" in missing and importlib.util.find_spec("PyTorchUtils") is not None:
        import PyTorchUtils

        if PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False) is None:
            raise SegmentationError("PyTorch could not be installed by the PyTorch extension; install it from the PyTorch module.")
    elif "torch" in missing:
        _pip(["install", "-c", "{constraints}", "torch"], python)
    args = pip_install_arguments(missing, Path("{constraints}"))
    if args:
        _pip(args, python)
    still = [name for name in missing_packages() if name in missing]
    if still:
        raise SegmentationError(f"Packages {still} are still missing after installing; install them with pip in Slicer's Python.")
    return missing


def _pip(args: list[str], python: str | None) -> None:
    with tempfile.TemporaryDirectory(prefix="MultiModalSeg-pip-") as folder:
        constraints = Path(folder) / "constraints.txt"
        constraints.write_text(constraints_text(), encoding="utf-8")
        args = [str(constraints) if a == "{constraints}" else a for a in args]
        result = subprocess.run([python or slicer_python(), "-m", "pip", *args], capture_output=True, text=True)
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["no message"])[-1]
            raise SegmentationError(f"Installing dependencies failed ({last}); check the network connection and retry.")


def slicer_python() -> str:
    """Slicer's Python interpreter (``PythonSlicer`` inside Slicer, else this interpreter)."""
    if hasattr(slicer, "app"):
        found = shutil.which("PythonSlicer")
        if found:
            return found
    return sys.executable


# --------------------------------------------------------------------------- models and devices


def available_models() -> list[dict]:
    """Models of the manifest as dicts (name, version, modalities, labels, licence, default)."""
    ensure_library_importable()
    from MultiModalSegLib.models import load_manifest

    return [
        {
            "name": e.name,
            "version": e.version,
            "modalities": list(e.modalities),
            "labels": list(e.labels),
            "licence": e.licence,
            "description": e.description,
            "default": bool(e.default),
        }
        for e in load_manifest()
    ]


def read_bundle_metadata(path: str | Path) -> dict:
    """``metadata.json`` of a bundle folder or zip, read without loading its weights."""
    path = Path(path)
    try:
        if path.is_dir():
            return json.loads((path / "metadata.json").read_text(encoding="utf-8"))
        with zipfile.ZipFile(path) as zf:
            member = next(n for n in zf.namelist() if n.rsplit("/", 1)[-1] == "metadata.json")
            return json.loads(zf.read(member))
    except (OSError, StopIteration, zipfile.BadZipFile, json.JSONDecodeError) as exc:
        raise SegmentationError(f"{path} is not a MultiModalSeg model bundle ({exc}); choose a bundle folder or .zip.") from exc


def model_info(model: str | None) -> dict:
    """Name, modalities, label names and licence of a manifest model (None: the default) or a bundle path."""
    ensure_library_importable()
    from MultiModalSegLib.models import resolve_model

    try:
        path, _ = resolve_model(model or None)
    except Exception as exc:  # BundleError: one sentence already
        raise SegmentationError(str(exc)) from exc
    meta = read_bundle_metadata(path)
    return {
        "name": meta.get("name", path.name),
        "modalities": list(meta.get("modalities", [])),
        "labels": [lab["name"] for lab in meta.get("labels", [])],
        "licence": meta.get("licence") or meta.get("license") or "not stated",
        "path": str(path),
    }


def gpu_status() -> tuple[bool, str]:
    """Whether a CUDA GPU can be used, and why not."""
    if importlib.util.find_spec("torch") is None:
        return False, "PyTorch is not installed yet"
    import torch

    if torch.cuda.is_available():
        return True, torch.cuda.get_device_name(0)
    return False, "PyTorch sees no CUDA GPU on this computer"


def modality_names() -> list[str]:
    ensure_library_importable()
    from MultiModalSegLib.modalities import modality_names as names

    return names()


def detect_modality(volume_node) -> tuple[str, str]:
    """Modality of a volume node and the reason (the library's DICOM-tag / intensity rule)."""
    ensure_library_importable()
    from MultiModalSegLib.io import Volume
    from MultiModalSegLib.modalities import detect_modality_reason

    check_volume(volume_node)
    array = slicer.util.arrayFromVolume(volume_node)
    tag = volume_node.GetAttribute("DICOM.Modality")
    return detect_modality_reason(Volume(array, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1), tag))


def check_volume(volume_node) -> None:
    """Raise ``SegmentationError`` for no volume, a volume without voxels, a 2D or multi-component one."""
    if volume_node is None:
        raise SegmentationError("No input volume is selected; select a CT or MR volume.")
    name = volume_node.GetName()
    image = volume_node.GetImageData()
    if image is None or min(image.GetDimensions()) <= 0 or image.GetNumberOfPoints() == 0:
        raise SegmentationError(f"Volume '{name}' holds no image data; load a 3D scan into it.")
    dims = image.GetDimensions()
    if min(dims) <= 1:
        raise SegmentationError(
            f"Volume '{name}' is 2D (size {dims[0]} x {dims[1]} x {dims[2]}); MultiModalSeg needs a 3D scan."
        )
    if image.GetNumberOfScalarComponents() != 1:
        raise SegmentationError(
            f"Volume '{name}' has {image.GetNumberOfScalarComponents()} components per voxel; give a scalar (grey-value) volume."
        )


# --------------------------------------------------------------------------- parameter node


@dataclass
class MultiModalSegParameters:
    """The panel's state, stored in the module's parameter node (saved with the scene).

    ``inputVolume`` and ``outputSegmentation`` are node references; the rest are strings.
    ``model`` is a manifest name or a bundle path ("" = the default model).
    """

    inputVolume: object = None
    modality: str = "auto"
    model: str = ""
    device: str = "auto"
    quality: str = "normal"
    outputSegmentation: object = None

    NODE_REFERENCES = ("inputVolume", "outputSegmentation")

    def save(self, node) -> None:
        wasModifying = node.StartModify()
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in self.NODE_REFERENCES:
                node.SetNodeReferenceID(f.name, value.GetID() if value is not None else None)
            else:
                node.SetParameter(f.name, str(value))
        node.EndModify(wasModifying)

    @classmethod
    def load(cls, node) -> MultiModalSegParameters:
        params = cls()
        for f in fields(cls):
            if f.name in cls.NODE_REFERENCES:
                setattr(params, f.name, node.GetNodeReference(f.name))
            elif node.GetParameter(f.name):
                setattr(params, f.name, node.GetParameter(f.name))
        return params


# --------------------------------------------------------------------------- the run


def _kill_tree(proc: subprocess.Popen) -> None:
    """Stop the subprocess and every process it started."""
    if proc.poll() is not None:
        return
    if os.name == "nt":
        subprocess.run(["taskkill", "/F", "/T", "/PID", str(proc.pid)], capture_output=True)
    else:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=5)
            return
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def _follow(stream, sink: queue.Queue, tag: str) -> None:
    for line in iter(stream.readline, ""):
        sink.put((tag, line.rstrip("\n")))
    stream.close()


_ERROR = re.compile(r"error: (.*)$")


def _library_env() -> dict:
    """Environment of a library subprocess: the library importable, a sane thread count."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(library_parent()), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 2) - 1)))
    return env


class ProcessJob:
    """A library command run in a subprocess (own process group), followed without blocking.

    ``poll()`` reads its output (stdout lines go to ``_on_output``, stderr is kept) and, once the
    process has ended, calls ``_finish`` (which raises ``SegmentationError`` on failure).
    States: ``running`` -> ``done`` | ``failed`` | ``cancelled``. Subclasses set ``progress``.
    """

    state = "running"
    error: str | None = None

    def _launch(self, command: list[str], cwd: str | Path | None = None) -> None:
        self.command = command
        self.stderr: list[str] = []
        self.started = time.monotonic()
        kwargs = {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP} if os.name == "nt" else {"start_new_session": True}
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=_library_env(), cwd=str(cwd) if cwd else None, **kwargs)
        self.lines: queue.Queue = queue.Queue()
        self.readers = [
            threading.Thread(target=_follow, args=(stream, self.lines, tag), daemon=True)
            for stream, tag in ((self.proc.stdout, "out"), (self.proc.stderr, "err"))
        ]
        for reader in self.readers:
            reader.start()

    def _drain(self) -> None:
        while True:
            try:
                tag, line = self.lines.get_nowait()
            except queue.Empty:
                return
            if tag == "err":
                self.stderr.append(line)
            else:
                self._on_output(line)

    def _on_output(self, line: str) -> None:
        pass

    def _finish(self) -> None:
        pass

    def _cleanup(self) -> None:
        pass

    def _end_state(self) -> str:
        """State of a run that ended without error (a subclass may tell a clean stop from done)."""
        return "done"

    def _last_error(self) -> str | None:
        """The library's one-sentence ``error: ...`` message, if it printed one."""
        for line in reversed(self.stderr):
            match = _ERROR.search(line)
            if match:
                return match.group(1).strip()
        return None

    def _exit_sentence(self, what: str) -> str:
        last = next((line for line in reversed(self.stderr) if line.strip()), "no message")
        return f"The {what} process stopped with exit code {self.proc.returncode} ({last.strip()}); see the Python console."

    def poll(self) -> bool:
        """Process new output; True once the job has ended (then ``state`` says how).

        Raises ``SegmentationError`` (once) when the run failed.
        """
        if self.state != "running":
            return True
        self._drain()
        if self.proc.poll() is None:
            return False
        for reader in self.readers:
            reader.join(timeout=5)
        self._drain()
        try:
            self._finish()
        except SegmentationError as exc:
            self.state, self.error = "failed", str(exc)
            raise
        finally:
            self._cleanup()
        self.state = self._end_state()
        if self.state == "done":
            self.progress(1.0, "done")
        return True

    def wait(self, poll_seconds: float = 0.1) -> None:
        while not self.poll():
            time.sleep(poll_seconds)

    def cancel(self) -> None:
        """Kill the process tree and remove the job's temporary files."""
        if self.state != "running":
            return
        _kill_tree(self.proc)
        self.state = "cancelled"
        self._cleanup()
        self.progress(0.0, "cancelled")


class SegmentationJob(ProcessJob):
    """One run of ``mmseg segment`` on one volume node. ``poll()`` advances it without blocking.

    States: ``running`` -> ``done`` | ``failed`` | ``cancelled``. ``segmentationNode`` is set when done.
    """

    def __init__(self, logic: MultiModalSegLogic, volumeNode, modality: str, model: str | None, device: str,
                 quality: str, outputSegmentation, overwrite: bool, progress: ProgressCallback | None,
                 largestComponent: bool):
        check_volume(volumeNode)
        if outputSegmentation is not None and outputSegmentation.GetSegmentation().GetNumberOfSegments() and not overwrite:
            raise SegmentationError(
                f"Segmentation '{outputSegmentation.GetName()}' already holds segments; choose a new output "
                "segmentation or confirm replacing it."
            )
        self.logic = logic
        self.volumeNode = volumeNode
        self.outputSegmentation = outputSegmentation
        self.progress = progress or (lambda fraction, message: None)
        self.state = "running"
        self.error: str | None = None
        self.segmentationNode = None
        self.summary = ""
        self.modality = ""
        self.tempDir = Path(tempfile.mkdtemp(prefix="MultiModalSeg-", dir=logic.tempRoot))
        self.inputPath = self.tempDir / "volume.nrrd"
        self.outputDir = self.tempDir / "out"
        try:
            self._write_input()
            command = [
                slicer_python(), "-m", "MultiModalSegLib", "segment", str(self.inputPath), "--output", str(self.outputDir),
                "--modality", modality or "auto", "--device", device or "auto", "--quality", quality or "normal", "--progress",
            ]
            if model:
                command += ["--model", str(model)]
            if not largestComponent:
                command.append("--no-largest-component")
            self._launch(command, cwd=self.tempDir)
        except BaseException:
            self._cleanup()
            raise
        self.progress(0.0, "starting")

    def _write_input(self) -> None:
        storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
        storage.SetFileName(str(self.inputPath))
        storage.SetUseCompression(False)
        if not storage.WriteData(self.volumeNode):
            raise SegmentationError(f"Volume '{self.volumeNode.GetName()}' could not be written to {self.inputPath}; check the disk space.")

    def _on_output(self, line: str) -> None:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            self.summary = line.replace(str(self.inputPath), f"volume '{self.volumeNode.GetName()}'")
            match = re.search(r": (\w+) \(", line)
            if match:
                self.modality = match.group(1)
            return
        if isinstance(record, dict) and "fraction" in record:
            message = str(record.get("message", ""))
            if message.startswith("modality "):
                self.modality = message.split()[1]
            self.progress(0.05 + 0.9 * float(record["fraction"]), message)

    def _error_sentence(self) -> str:
        message = self._last_error()
        if message:
            return message.replace(str(self.inputPath), f"volume '{self.volumeNode.GetName()}'")
        return self._exit_sentence("segmentation")

    def _finish(self) -> None:
        result = self.outputDir / "volume.seg.nrrd"
        if self.proc.returncode != 0 or not result.is_file():
            raise SegmentationError(self._error_sentence())
        self.segmentationNode = self.logic.importSegmentation(result, self.volumeNode, self.outputSegmentation)

    def _cleanup(self) -> None:
        shutil.rmtree(self.tempDir, ignore_errors=True)


class ModelDownloadJob(ProcessJob):
    """``mmseg models download NAME --progress`` in a subprocess; ``path`` is set when done.

    Cancel kills the process: the library keeps only its ``.part`` file (to resume next time) and
    renames a file into the cache only once its sha256 matches, so nothing usable-looking is left.
    An update is fetched beside the old copy, which the library removes only after verification.
    """

    def __init__(self, logic: MultiModalSegLogic, name: str, progress: ProgressCallback | None = None):
        self.name = name
        self.progress = progress or (lambda fraction, message: None)
        self.state = "running"
        self.error = None
        self.path: Path | None = None
        command = [slicer_python(), "-m", "MultiModalSegLib", "models", "download", name, "--progress"]
        command += logic._models_flags()
        self._launch(command)
        self.progress(0.0, f"downloading {name}")

    def _on_output(self, line: str) -> None:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if line.startswith(f"{self.name}: "):
                self.path = Path(line[len(self.name) + 2:].strip())
            return
        if isinstance(record, dict) and "done" in record:
            done, total = int(record["done"]), record.get("total")
            text = f"{done / 1e6:.1f} MB" + (f" of {int(total) / 1e6:.1f} MB" if total else "")
            self.progress(float(record.get("fraction") or 0.0), f"downloading {self.name}: {text}")

    def _finish(self) -> None:
        if self.proc.returncode != 0 or self.path is None:
            raise SegmentationError(self._last_error() or self._exit_sentence("download"))


class MultiModalSegLogic:
    """Runs segmentations of volume nodes; usable without the GUI (tests, batch, Python console)."""

    def __init__(self, scene=None, tempRoot: str | Path | None = None, modelsManifest: str | Path | None = None,
                 modelsCache: str | Path | None = None):
        self.scene = scene
        self.tempRoot = str(tempRoot) if tempRoot is not None else self._default_temp_root()
        # None: the library's defaults ($MMSEG_MODELS_MANIFEST / $MMSEG_MODELS_CACHE, else built-in)
        self.modelsManifest = str(modelsManifest) if modelsManifest is not None else None
        self.modelsCache = str(modelsCache) if modelsCache is not None else None

    @staticmethod
    def _default_temp_root() -> str | None:
        # inside the Slicer application: its temporary folder; elsewhere (slicer-core, tests) the system's
        return getattr(getattr(slicer, "app", None), "temporaryPath", None)

    @property
    def mrmlScene(self):
        return self.scene if self.scene is not None else slicer.mrmlScene

    # ---- parameter node
    def getParameterNode(self):
        """The module's parameter node (created once per scene, saved with it)."""
        scene = self.mrmlScene
        for i in range(scene.GetNumberOfNodesByClass("vtkMRMLScriptedModuleNode")):
            node = scene.GetNthNodeByClass(i, "vtkMRMLScriptedModuleNode")
            if node.GetAttribute("ModuleName") == MODULE_NAME:
                return node
        node = scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode", MODULE_NAME)
        node.SetAttribute("ModuleName", MODULE_NAME)
        return node

    def getParameters(self) -> MultiModalSegParameters:
        return MultiModalSegParameters.load(self.getParameterNode())

    def setParameters(self, params: MultiModalSegParameters) -> None:
        params.save(self.getParameterNode())

    # ---- running
    def start(self, volumeNode, modality: str = "auto", model: str | None = None, device: str = "auto",
              quality: str = "normal", outputSegmentation=None, overwrite: bool = False,
              progress: ProgressCallback | None = None, largestComponent: bool = True) -> SegmentationJob:
        """Start segmenting ``volumeNode`` in a subprocess; returns the job to ``poll()`` or ``cancel()``."""
        return SegmentationJob(self, volumeNode, modality, model, device, quality, outputSegmentation, overwrite,
                               progress, largestComponent)

    def process(self, volumeNode, modality: str = "auto", model: str | None = None, device: str = "auto",
                quality: str = "normal", outputSegmentation=None, overwrite: bool = False,
                progress: ProgressCallback | None = None, largestComponent: bool = True):
        """Segment ``volumeNode`` and return the segmentation node (blocks until done)."""
        job = self.start(volumeNode, modality, model, device, quality, outputSegmentation, overwrite, progress,
                         largestComponent)
        job.wait()
        return job.segmentationNode

    def importSegmentation(self, path: str | Path, volumeNode, outputSegmentation=None):
        """Read a ``.seg.nrrd`` (segment names, colours, terminology tags) into a segmentation node."""
        scene = self.mrmlScene
        node = outputSegmentation
        created = node is None
        if created:
            node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", scene.GenerateUniqueName(f"{volumeNode.GetName()} segmentation"))
        storage = slicer.vtkMRMLSegmentationStorageNode()
        storage.SetFileName(str(path))
        node.GetSegmentation().RemoveAllSegments()
        if not storage.ReadData(node):
            if created:
                scene.RemoveNode(node)
            raise SegmentationError(f"The result {path} could not be read into a segmentation; see the Python console.")
        node.CreateDefaultDisplayNodes()
        node.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
        node.SetAndObserveTransformNodeID(volumeNode.GetTransformNodeID())
        return node

    # ---- model zoo (installed, downloadable and updatable models of the manifest)
    def _models_flags(self) -> list[str]:
        flags = []
        if self.modelsManifest:
            flags += ["--manifest", self.modelsManifest]
        if self.modelsCache:
            flags += ["--cache", self.modelsCache]
        return flags

    def listModels(self) -> list[dict]:
        """Every manifest model as a dict: name, version, state (``installed``, ``downloadable``,
        ``update available``, ``missing``), installed_version, path, labels, modalities, default, size."""
        ensure_library_importable()
        from MultiModalSegLib.model_zoo import list_models

        try:
            return [m.to_dict() for m in list_models(self.modelsManifest, self.modelsCache)]
        except Exception as exc:  # BundleError / ConfigError: one sentence already
            raise SegmentationError(str(exc)) from exc

    def startModelDownload(self, name: str, progress: ProgressCallback | None = None) -> ModelDownloadJob:
        """Download (or update) model ``name`` in a subprocess; returns the job to ``poll()`` or ``cancel()``."""
        return ModelDownloadJob(self, name, progress)

    def downloadModel(self, name: str, progress: ProgressCallback | None = None) -> Path:
        """Download model ``name`` and return its cached path (blocks until done)."""
        job = self.startModelDownload(name, progress)
        job.wait()
        return job.path

    def importModelFile(self, path: str | Path) -> dict:
        """Install a bundle file copied by hand (sha256 checked against the manifest); returns name, version, path."""
        ensure_library_importable()
        from MultiModalSegLib.model_zoo import import_model

        try:
            entry, installed = import_model(path, self.modelsManifest, self.modelsCache)
        except Exception as exc:
            raise SegmentationError(str(exc)) from exc
        return {"name": entry.name, "version": entry.version, "path": str(installed)}

    def modelCard(self, name: str) -> str:
        """The model card (markdown) of a manifest model, installed or not, or of a bundle path."""
        ensure_library_importable()
        from MultiModalSegLib.model_card import model_card

        try:
            return model_card(name, self.modelsManifest, self.modelsCache)
        except Exception as exc:
            raise SegmentationError(str(exc)) from exc
