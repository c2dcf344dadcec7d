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

import json
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, fields
from pathlib import Path

import slicer

from .dependencies import (  # noqa: F401  (the Logic's public names)
    PROTECTED_PACKAGES,
    REQUIRED_PACKAGES,
    constraints_text,
    install_dependencies,
    missing_packages,
    pip_install_arguments,
)
from .process import (  # noqa: F401
    MODULE_DIR,
    ProcessJob,
    ProgressCallback,
    SegmentationError,
    ensure_library_importable,
    library_parent,
    slicer_python,
)
from .segment_names import display_name
from .user_models import user_model_names, user_models_manifest

MODULE_NAME = "MultiModalSeg"


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


DEVICES = (("auto", "auto"), ("CPU", "cpu"), ("NVIDIA GPU (CUDA)", "cuda"), ("Apple GPU (MPS)", "mps"))


def gpu_status() -> tuple[bool, str]:
    """Whether a GPU (CUDA, or Apple's MPS) can be used, and which one or why not. Asked again after
    an install: PyTorch may have arrived since the panel opened."""
    return device_status()["auto"]


def device_status() -> dict[str, tuple[bool, str]]:
    """For every device choice of :data:`DEVICES`: whether it can be used and a sentence saying why."""
    status = {"auto": (True, "the GPU when there is one, else the CPU"), "cpu": (True, "the computer's processor")}
    if missing_packages() and "torch" in missing_packages():
        reason = "PyTorch is not installed yet"
        return {**status, "auto": (False, reason), "cuda": (False, reason), "mps": (False, reason)}
    import torch

    cuda = torch.cuda.is_available()
    status["cuda"] = (cuda, torch.cuda.get_device_name(0) if cuda else "PyTorch sees no CUDA GPU on this computer")
    backend = getattr(torch.backends, "mps", None)
    mps = bool(backend is not None and backend.is_available())
    status["mps"] = (mps, "Apple GPU (Metal)" if mps else "no Apple GPU (MPS) on this computer")
    status["auto"] = (cuda, status["cuda"][1] if cuda else "no CUDA GPU: the CPU is used"
                      + (" (choose Apple GPU (MPS) to use it)" if mps else ""))
    return status


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


class SegmentationJob(ProcessJob):
    """One run of ``mmseg segment`` on one volume node. ``poll()`` advances it without blocking.

    States: ``running`` -> ``done`` | ``failed`` | ``cancelled``. ``segmentationNode`` is set when done.
    """

    def __init__(self, logic: MultiModalSegLogic, volumeNode, modality: str, model: str | None, device: str,
                 quality: str, outputSegmentation, overwrite: bool, progress: ProgressCallback | None,
                 largestComponent: bool, organLayout: bool = True):
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
        self.summary = ""  # the result line; warnings first (see _on_output)
        self.warnings: list[str] = []
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
            if not organLayout:
                command.append("--no-organ-layout")
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
        """``--progress`` prints JSON lines only: progress records, then the result record, whose
        ``warnings`` (a given modality that detection contradicts, every organ empty) lead the summary."""
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            return
        if isinstance(record, dict) and "summary" in record:
            self.modality = str(record.get("modality") or self.modality)
            self.warnings = [str(w) for w in record.get("warnings") or []]
            summary = str(record["summary"]).replace(str(self.inputPath), f"volume '{self.volumeNode.GetName()}'")
            if "volumes_ml" in record:  # a result: said without the temporary file's path
                volumes = ", ".join(f"{display_name(k)} {float(v):.0f} mL" for k, v in record["volumes_ml"].items())
                summary = (f"Volume '{self.volumeNode.GetName()}': {self.modality} ({record.get('modality_reason', '')}); "
                           f"{float(record.get('seconds', 0.0)):.1f} s; {volumes}.")  # fmt: skip
            self.summary = " ".join([*(f"Warning: {w[:1].upper()}{w[1:]}." for w in self.warnings), summary])
        elif isinstance(record, dict) and "fraction" in record:
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
            return
        if isinstance(record, dict) and record.get("name") == self.name and "path" in record:  # the last line
            self.path = Path(record["path"])
        elif isinstance(record, dict) and "done" in record:
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
        node = scene.GetSingletonNode(MODULE_NAME, "vtkMRMLScriptedModuleNode")
        if node is not None:
            return node
        for i in range(scene.GetNumberOfNodesByClass("vtkMRMLScriptedModuleNode")):  # a scene saved before 0.2
            node = scene.GetNthNodeByClass(i, "vtkMRMLScriptedModuleNode")
            if node.GetAttribute("ModuleName") == MODULE_NAME:
                node.SetSingletonTag(MODULE_NAME)
                return node
        node = slicer.vtkMRMLScriptedModuleNode()
        node.SetName(scene.GenerateUniqueName(MODULE_NAME))
        node.SetSingletonTag(MODULE_NAME)  # one per scene, as Slicer's ScriptedLoadableModuleLogic makes it
        node.SetAttribute("ModuleName", MODULE_NAME)
        node.SetModuleName(MODULE_NAME)
        return scene.AddNode(node)

    def getParameters(self) -> MultiModalSegParameters:
        return MultiModalSegParameters.load(self.getParameterNode())

    def setParameters(self, params: MultiModalSegParameters) -> None:
        params.save(self.getParameterNode())

    # ---- running
    def start(self, volumeNode, modality: str = "auto", model: str | None = None, device: str = "auto",
              quality: str = "normal", outputSegmentation=None, overwrite: bool = False,
              progress: ProgressCallback | None = None, largestComponent: bool = True,
              organLayout: bool = True) -> SegmentationJob:
        """Start segmenting ``volumeNode`` in a subprocess; returns the job to ``poll()`` or ``cancel()``.
        ``largestComponent`` keeps each organ's largest piece; ``organLayout`` lets a piece that lies where
        the organ lies among the others win over a larger one far from there (``mmseg segment``'s
        ``--no-largest-component`` and ``--no-organ-layout`` when false)."""
        return SegmentationJob(self, volumeNode, modality, self.modelArgument(model), device, quality,
                               outputSegmentation, overwrite, progress, largestComponent, organLayout)

    def process(self, volumeNode, modality: str = "auto", model: str | None = None, device: str = "auto",
                quality: str = "normal", outputSegmentation=None, overwrite: bool = False,
                progress: ProgressCallback | None = None, largestComponent: bool = True, organLayout: bool = True):
        """Segment ``volumeNode`` and return the segmentation node (blocks until done)."""
        job = self.start(volumeNode, modality, model, device, quality, outputSegmentation, overwrite, progress,
                         largestComponent, organLayout)
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
        segmentation = node.GetSegmentation()
        for i in range(segmentation.GetNumberOfSegments()):  # "kidney_right" -> "Right kidney"
            segment = segmentation.GetNthSegment(i)
            segment.SetName(display_name(segment.GetName()))
        placeInStudyOf(node, volumeNode)
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
            models = [{**m.to_dict(), "user": False} for m in list_models(self.modelsManifest, self.modelsCache)]
            user = self.userModelsManifest()
            if user.is_file():  # fine-tuned in Slicer: the per-user folder
                models += [{**m.to_dict(), "user": True, "default": False} for m in list_models(user, self.modelsCache)]
            return models
        except Exception as exc:  # BundleError / ConfigError: one sentence already
            raise SegmentationError(str(exc)) from exc

    def userModelsManifest(self) -> Path:
        """Manifest of the models fine-tuned by this user (see :mod:`user_models`)."""
        return user_models_manifest(self.modelsCache)

    def isUserModel(self, name: str | None) -> bool:
        if not name:
            return False
        try:
            return name in user_model_names(self.modelsCache)
        except Exception:
            return False

    def defaultModelName(self) -> str:
        """Name of the manifest's default model (the one the CLI and the self-test use)."""
        ensure_library_importable()
        from MultiModalSegLib.models import default_model

        try:
            return default_model(self.modelsManifest).name
        except Exception as exc:
            raise SegmentationError(str(exc)) from exc

    def modelArgument(self, model: str | None) -> str | None:
        """What ``--model`` gets: a fine-tuned model's bundle path, else the name or path as given."""
        if self.isUserModel(model):
            ensure_library_importable()
            from MultiModalSegLib.models import find_entry

            return str(find_entry(model, self.userModelsManifest()).resolve_path(self.modelsCache))
        return model or None

    def modelInfo(self, model: str | None) -> dict:
        """:func:`model_info` of a shipped, downloaded or fine-tuned model (None: the default)."""
        return model_info(self.modelArgument(model))

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

        manifest = self.userModelsManifest() if self.isUserModel(name) else self.modelsManifest
        try:
            return model_card(name, manifest, self.modelsCache)
        except Exception as exc:
            raise SegmentationError(str(exc)) from exc


def placeInStudyOf(node, volumeNode) -> None:
    """Put ``node`` under the subject-hierarchy parent (the study) of ``volumeNode``."""
    scene = volumeNode.GetScene()
    hierarchy = scene.GetSubjectHierarchyNode() if scene is not None else None
    if hierarchy is None:
        return
    volumeItem = hierarchy.GetItemByDataNode(volumeNode)
    parent = hierarchy.GetItemParent(volumeItem) if volumeItem else 0
    if not parent or parent == hierarchy.GetSceneItemID():
        return
    item = hierarchy.GetItemByDataNode(node)
    if item:
        hierarchy.SetItemParent(item, parent)
    else:  # no subject-hierarchy logic made an item for it (headless): make it there
        hierarchy.CreateItem(parent, node)


def showIn3D(segmentationNode, show: bool = True) -> None:
    """Show (or hide) ``segmentationNode`` in the 3D views: builds its closed-surface representation."""
    if show:
        segmentationNode.CreateClosedSurfaceRepresentation()
    display = segmentationNode.GetDisplayNode()
    if display is not None:
        display.SetVisibility3D(show)
