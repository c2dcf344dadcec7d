"""Logic of the panel's Train section: fine-tune a model from segmentations in the scene.

No Qt here (the Widget only reads and writes widgets). The flow:

1. labelled pairs (volume node, segmentation node, modality) are kept as node references in the
   module's parameter node, so a saved scene restores them;
2. :func:`segmentLabelMapping` maps each segment to one of the model's labels (by terminology code,
   else by name; a user's override wins) and :func:`checkTrainingPairs` refuses, before anything
   runs, a pair whose segmentation has no segments or no segment the model knows;
3. :func:`exportTrainingDataset` writes one NIfTI image and one NIfTI label map per pair and the
   library's ``dataset.json``; the label map is exported on the volume's grid by the segmentations
   logic, so a segmentation drawn on another grid is resampled to its volume;
4. :class:`TrainingJob` runs ``mmseg finetune`` in a subprocess (like every library call of the
   module), follows its ``progress.jsonl``, stops it through a ``STOP`` file (the last checkpoint is
   kept), resumes it by running the same command again, and when it is done installs the new bundle
   in the models manifest so that the model selector lists it and a segmentation can use it at once.

Choices stated here:
- a pair marked "held out" goes to the dataset's ``validation`` split: ``mmseg finetune`` does not
  train on it and scores it with the parent model before and the new model after (with its
  held-out phantoms); those Dice values are the plot's points, the loss of every logged step its line;
- a label map voxel covered by two mapped segments takes the later segment's label (the
  segmentations logic's export order);
- a fine-tuned model is installed as a ``file`` entry of the models manifest the Logic uses (the
  bundle is copied into ``Models/`` beside that manifest), then verified by the model zoo's import;
  its name must not be one of the manifest's other models, so a shipped model is never replaced.
"""

from __future__ import annotations

import datetime
import json
import math
import re
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import slicer
import vtk

from . import segmentation_logic as L
from .process import GRACE_SECONDS

TRAIN_COUNT = "trainingPairCount"  # parameter: number of pairs stored
TRAIN_VOLUMES = "trainingVolume"  # node reference roles trainingVolume0, trainingVolume1, ... (one per pair)
TRAIN_SEGMENTATIONS = "trainingSegmentation"
TRAIN_MODALITIES = "trainingModalities"  # parameter: modalities of the pairs, comma-separated
TRAIN_HELD_OUT = "trainingHeldOut"  # parameter: "1" for a held-out pair, "0" for a training pair, comma-separated
TRAIN_OVERRIDES = "trainingLabelOverrides"  # parameter: JSON {segment name: label name or null}
STOPPED_EXIT_CODE = 3  # mmseg train / finetune: stopped cleanly after a step, checkpoint written

# words that name the same structure; a segment name is compared with a label name word by word
SYNONYMS = {
    "hepar": "liver", "hepatic": "liver",
    "lien": "spleen", "splenic": "spleen",
    "renal": "kidney", "kidneys": "kidney", "ren": "kidney",
    "r": "right", "rt": "right", "dexter": "right", "dx": "right",
    "l": "left", "lt": "left", "sinister": "left", "sin": "left",
}


class TrainingError(L.SegmentationError):
    """Training that cannot start or failed; the message is one sentence for the user."""


# --------------------------------------------------------------------------- pairs


@dataclass
class TrainingPair:
    """One labelled scan: a volume node, the segmentation drawn on it, its modality, and whether it is
    held out (scored before and after, not trained on)."""

    volumeNode: object
    segmentationNode: object
    modality: str
    heldOut: bool = False

    def describe(self) -> str:
        volume = self.volumeNode.GetName() if self.volumeNode is not None else "no volume"
        segmentation = self.segmentationNode.GetName() if self.segmentationNode is not None else "no segmentation"
        return f"'{segmentation}' on '{volume}' ({self.modality}{', held out' if self.heldOut else ''})"


def getTrainingPairs(parameterNode) -> list[TrainingPair]:
    """The pairs stored in the module's parameter node (a pair whose volume or segmentation was
    deleted from the scene is left out)."""
    count = int(parameterNode.GetParameter(TRAIN_COUNT) or 0)
    modalities = (parameterNode.GetParameter(TRAIN_MODALITIES) or "").split(",")
    heldOut = (parameterNode.GetParameter(TRAIN_HELD_OUT) or "").split(",")
    pairs = []
    for i in range(min(count, len(modalities))):
        volume = parameterNode.GetNodeReference(f"{TRAIN_VOLUMES}{i}")
        segmentation = parameterNode.GetNodeReference(f"{TRAIN_SEGMENTATIONS}{i}")
        if volume is not None and segmentation is not None:
            pairs.append(TrainingPair(volume, segmentation, modalities[i], i < len(heldOut) and heldOut[i] == "1"))
    return pairs


def setTrainingPairs(parameterNode, pairs: Iterable[TrainingPair]) -> None:
    """Store ``pairs`` in the parameter node (replacing the ones there)."""
    pairs = list(pairs)
    wasModifying = parameterNode.StartModify()
    for i in range(int(parameterNode.GetParameter(TRAIN_COUNT) or 0)):
        parameterNode.RemoveNodeReferenceIDs(f"{TRAIN_VOLUMES}{i}")
        parameterNode.RemoveNodeReferenceIDs(f"{TRAIN_SEGMENTATIONS}{i}")
    for i, pair in enumerate(pairs):
        parameterNode.SetNodeReferenceID(f"{TRAIN_VOLUMES}{i}", pair.volumeNode.GetID())
        parameterNode.SetNodeReferenceID(f"{TRAIN_SEGMENTATIONS}{i}", pair.segmentationNode.GetID())
    parameterNode.SetParameter(TRAIN_COUNT, str(len(pairs)))
    parameterNode.SetParameter(TRAIN_MODALITIES, ",".join(p.modality for p in pairs))
    parameterNode.SetParameter(TRAIN_HELD_OUT, ",".join("1" if p.heldOut else "0" for p in pairs))
    parameterNode.EndModify(wasModifying)


def addTrainingPair(parameterNode, volumeNode, segmentationNode, modality: str = "auto", heldOut: bool = False) -> TrainingPair:
    """Append a pair (``modality`` "auto": the library's detection); the same pair twice is refused."""
    L.check_volume(volumeNode)
    if segmentationNode is None:
        raise TrainingError(f"No segmentation is selected for volume '{volumeNode.GetName()}'; select the segmentation drawn on it.")
    if not modality or modality == "auto":
        modality = L.detect_modality(volumeNode)[0]
    pairs = getTrainingPairs(parameterNode)
    if any(p.volumeNode is volumeNode and p.segmentationNode is segmentationNode for p in pairs):
        raise TrainingError(f"'{segmentationNode.GetName()}' on '{volumeNode.GetName()}' is already in the training pairs.")
    pair = TrainingPair(volumeNode, segmentationNode, modality, heldOut)
    setTrainingPairs(parameterNode, [*pairs, pair])
    return pair


def updateTrainingPair(parameterNode, index: int, modality: str | None = None, heldOut: bool | None = None) -> None:
    """Change the modality or the held-out flag of pair ``index``."""
    pairs = getTrainingPairs(parameterNode)
    if 0 <= index < len(pairs):
        if modality:
            pairs[index].modality = modality
        if heldOut is not None:
            pairs[index].heldOut = bool(heldOut)
        setTrainingPairs(parameterNode, pairs)


def removeTrainingPair(parameterNode, index: int) -> None:
    pairs = getTrainingPairs(parameterNode)
    if 0 <= index < len(pairs):
        del pairs[index]
        setTrainingPairs(parameterNode, pairs)


def getLabelOverrides(parameterNode) -> dict[str, str | None]:
    """The user's segment -> label choices stored in the parameter node."""
    try:
        value = json.loads(parameterNode.GetParameter(TRAIN_OVERRIDES) or "{}")
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def setLabelOverride(parameterNode, segmentName: str, label: str | None) -> None:
    """Map segment ``segmentName`` to model label ``label`` (None: leave the segment out)."""
    overrides = getLabelOverrides(parameterNode)
    overrides[segmentName] = label or None
    parameterNode.SetParameter(TRAIN_OVERRIDES, json.dumps(overrides, sort_keys=True))


def methodNames() -> list[str]:
    """Names of the library's registered methods, read from ``methods/*.py`` without importing
    PyTorch into Slicer (one file per method, ``name = "..."`` in its class)."""
    folder = L.library_parent() / "MultiModalSegLib" / "methods"
    names = []
    for path in sorted(folder.glob("*.py")):
        text = path.read_text(encoding="utf-8")
        if "@register_method" in text:
            names += re.findall(r'^\s+name = "(\w+)"', text, re.M)
    return names


# plain-language names of the methods, and the paper behind each (the method list's tooltip)
METHOD_TITLES = {
    "ummkd": ("Shared layers, one normalisation per modality, knowledge distillation",
              "UMMKD: Dou et al., Unpaired multi-modal segmentation via knowledge distillation, IEEE TMI 2020"),
    "csa": ("Shared layers, organ-shape consistency between modalities",
            "CSA: class-specific affinity knowledge distillation for unpaired multi-modal segmentation"),
    "lssc": ("Transformer with shared organ descriptions",
             "LSSC: Yang et al., learnable semantic structure consistency for unpaired multi-modal segmentation"),
    "mulmodseg": ("Text-guided organ heads (\"a CT / MR of a liver\")",
                  "MulModSeg: Li et al., multi-modal segmentation with text-conditioned heads, 2024"),
    "cmc": ("One encoder per modality, cross-modality consistency",
            "CMC: Zhou et al., cross-modal consistency for unpaired multi-modal segmentation, MICCAI 2024"),
    "individual": ("One separate network per modality (baseline)", "Baseline: a network per modality, nothing shared"),
    "joint": ("One network for all modalities (baseline)", "Baseline: one network trained on every modality"),
    "joint_kd": ("One network for all modalities, knowledge distillation (baseline)",
                 "Baseline: Joint+KD, one network with UMMKD's knowledge distillation (Dou et al. 2020)"),
    "y_shaped": ("Separate encoders, shared decoder (baseline)", "Baseline: Y-shaped network (Dou et al. 2020)"),
    "x_shaped": ("Separate encoders and decoders, shared middle (baseline)", "Baseline: X-shaped network (Dou et al. 2020)"),
}


def methodTitle(name: str) -> tuple[str, str]:
    """(plain-language title, paper) of a method; an unknown method shows its own name."""
    return METHOD_TITLES.get(name, (name, name))


def trainingSecondsPerStep(logic: L.MultiModalSegLogic, model: str | None) -> tuple[float, str] | None:
    """Seconds per training step measured when ``model`` was trained (its bundle's training record)
    and the device it was measured on; None when the bundle does not say."""
    try:
        training = L.read_bundle_metadata(bundlePath(logic, model)).get("training") or {}
        seconds, steps = float(training["seconds_this_run"]), int(training["steps"])
    except (L.SegmentationError, KeyError, TypeError, ValueError):
        return None
    if seconds <= 0 or steps <= 0:
        return None
    return seconds / steps, str(training.get("device") or "cpu")


def trainingEstimate(logic: L.MultiModalSegLogic, model: str | None, steps: int) -> str:
    """One sentence: about how long ``steps`` steps take, from the model card's measured seconds."""
    measured = trainingSecondsPerStep(logic, model)
    if measured is None:
        return "No time estimate: the model does not record how long its training took."
    perStep, device = measured
    total = perStep * int(steps)
    span = f"{total / 60:.0f} min" if total >= 90 else f"{total:.0f} s"
    where = "on the CPU" if device == "cpu" else f"on {device}"
    return (f"About {span} {where} ({perStep:.1f} s per step, measured when this model was trained; "
            "a GPU is usually much faster).")


# --------------------------------------------------------------------------- labels


def bundlePath(logic: L.MultiModalSegLogic, model: str | None) -> Path:
    """Bundle of a model of the Logic's manifest (None: the default) or a bundle path."""
    L.ensure_library_importable()
    from MultiModalSegLib.models import resolve_model

    if logic.isUserModel(model):  # fine-tuned earlier: its bundle in the per-user folder
        return Path(logic.modelArgument(model))
    try:  # never downloads: a model to train from must be installed first
        return Path(resolve_model(model or None, logic.modelsManifest, cache_dir=logic.modelsCache, download=False)[0])
    except Exception as exc:  # BundleError: one sentence already
        raise TrainingError(str(exc)) from exc


def modelLabels(logic: L.MultiModalSegLogic, model: str | None) -> list[dict]:
    """Labels of a model (see :func:`bundlePath`): dicts with value, name, snomed."""
    meta = L.read_bundle_metadata(bundlePath(logic, model))
    return [{"value": int(lab["value"]), "name": str(lab["name"]), "snomed": lab.get("snomed")} for lab in meta.get("labels", [])]


def modelModalities(logic: L.MultiModalSegLogic, model: str | None) -> list[str]:
    return list(L.read_bundle_metadata(bundlePath(logic, model)).get("modalities", []))


def _words(text: str) -> tuple[str, ...]:
    """Lower-case words of a name with synonyms replaced, sorted: "Right Kidney" == "kidney_right"."""
    words = re.split(r"[\s_\-.,/()]+", text.lower())
    return tuple(sorted(SYNONYMS.get(w, w) for w in words if w))


def _terminology_codes(segment) -> tuple[str | None, str]:
    """(type code, "modifier meaning + type meaning") of a segment's terminology, if it has one.

    Slicer's terminology string is ``context~category~type~type modifier~region context~region~region modifier``,
    each entry ``scheme^value^meaning``."""
    term = segment.GetTerminology() if hasattr(segment, "GetTerminology") else ""
    fields = (term or "").split("~")
    if len(fields) < 4:
        return None, ""
    typ = fields[2].split("^")
    modifier = fields[3].split("^")
    code = typ[1] if len(typ) > 2 and typ[1] else None
    meaning = " ".join(part for part in (modifier[2] if len(modifier) > 2 else "", typ[2] if len(typ) > 2 else "") if part)
    return code, meaning


def _match(segment, labels: list[dict]) -> str | None:
    code, meaning = _terminology_codes(segment)
    if code:  # by code: Kidney with the Right modifier is the label coded 9846003 (right kidney)
        L.ensure_library_importable()
        from MultiModalSegLib.terminology import snomed_from_entry

        wanted = snomed_from_entry(segment.GetTerminology()) or code
        found = [lab for lab in labels if lab.get("snomed") and str(lab["snomed"]) == wanted]
        if len(found) == 1:
            return found[0]["name"]
    for text in (segment.GetName(), meaning):
        words = _words(text)
        for lab in labels:
            if words and words == _words(lab["name"]):
                return lab["name"]
    return None


def segmentLabelMapping(segmentationNode, labels: list[dict], overrides: dict[str, str | None] | None = None) -> dict[str, str | None]:
    """Segment name -> model label name (None: not used for training), for every segment.

    Matched by the segment's terminology code (SNOMED CT type code equal to the label's), else by
    name: case, spaces, underscores and word order are ignored and :data:`SYNONYMS` applied
    ("Right Kidney", "kidney R" and "kidney_right" are one). ``overrides`` (segment name -> label
    name, or None / "" to leave the segment out) wins over both.
    """
    overrides = overrides or {}
    names = {lab["name"] for lab in labels}
    for segment_name, label in overrides.items():
        if label and label not in names:
            raise TrainingError(f"The mapping of segment '{segment_name}' names label '{label}', which the model lacks; choose one of {', '.join(sorted(names))}.")
    mapping: dict[str, str | None] = {}
    segmentation = segmentationNode.GetSegmentation()
    for i in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(i)
        name = segment.GetName()
        mapping[name] = (overrides[name] or None) if name in overrides else _match(segment, labels)
    return mapping


def mappingRows(pairs: list[TrainingPair], labels: list[dict], overrides: dict[str, str | None] | None = None) -> list[tuple[str, str | None]]:
    """(segment name, model label or None) for every segment name of the pairs, in order of appearance
    (the panel's mapping table; a name in several segmentations is one row)."""
    rows: dict[str, str | None] = {}
    for pair in pairs:
        if pair.segmentationNode is not None:
            for name, label in segmentLabelMapping(pair.segmentationNode, labels, overrides).items():
                rows.setdefault(name, label)
    return list(rows.items())


@dataclass
class PairCheck:
    """What :func:`checkTrainingPairs` found for one pair."""

    pair: TrainingPair
    mapping: dict[str, str | None]
    unknown: list[str] = field(default_factory=list)  # segments not mapped to a model label
    missing: list[str] = field(default_factory=list)  # model labels no segment maps to (background there)
    newModality: bool = False  # the model was not trained on the pair's modality

    def summary(self) -> str:
        parts = [f"{self.pair.describe()}: {sum(v is not None for v in self.mapping.values())} segments used"]
        if self.unknown:
            parts.append(f"ignored (no model label): {', '.join(self.unknown)}")
        if self.missing:
            parts.append(f"not drawn (trained as background): {', '.join(self.missing)}")
        if self.newModality:
            parts.append(f"{self.pair.modality} is new to the model")
        return "; ".join(parts)


def checkTrainingPairs(pairs: list[TrainingPair], labels: list[dict], modalities: list[str] | None = None,
                       overrides: dict[str, str | None] | None = None) -> list[PairCheck]:
    """Check every pair before training; raise ``TrainingError`` (one sentence) when one cannot be used.

    Refused: no pairs (or only held-out ones), a pair without volume or segmentation, a segmentation
    with no segments, a segmentation none of whose segments maps to a model label, a modality the
    library does not know. Reported, not refused: segments without a label, model labels without a
    segment, and a modality the model lacks (``modalities``): ``mmseg finetune`` adds it when the
    method can, and otherwise refuses with its own sentence.
    """
    if not pairs:
        raise TrainingError("There are no training pairs; select a volume and its segmentation and press 'Add pair'.")
    if all(p.heldOut for p in pairs):
        raise TrainingError("Every pair is held out; untick 'held out' for at least one pair to train on.")
    checks = []
    label_names = [lab["name"] for lab in labels]
    for pair in pairs:
        L.check_volume(pair.volumeNode)
        if pair.segmentationNode is None:
            raise TrainingError(f"The pair of volume '{pair.volumeNode.GetName()}' has no segmentation; remove it and add it again.")
        name = pair.segmentationNode.GetName()
        known = L.modality_names()
        if pair.modality not in known:
            raise TrainingError(f"Modality '{pair.modality}' of {pair.describe()} is not one MultiModalSeg knows ({', '.join(known)}); set the pair's modality in the pairs table.")
        if pair.segmentationNode.GetSegmentation().GetNumberOfSegments() == 0:
            raise TrainingError(f"Segmentation '{name}' has no segments; draw the organs in the Segment Editor before training.")
        mapping = segmentLabelMapping(pair.segmentationNode, labels, overrides)
        if not any(mapping.values()):
            raise TrainingError(
                f"None of the segments of '{name}' ({', '.join(mapping)}) matches a label of the model "
                f"({', '.join(label_names)}); rename the segments or set their labels in the mapping table."
            )
        used = set(filter(None, mapping.values()))
        checks.append(PairCheck(pair, mapping, [s for s, lab in mapping.items() if lab is None],
                                [lab for lab in label_names if lab not in used],
                                modalities is not None and pair.modality not in modalities))
    return checks


# --------------------------------------------------------------------------- export


def _write_node(node, path: Path) -> None:
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    if not storage.WriteData(node):
        raise TrainingError(f"'{node.GetName()}' could not be written to {path}; check the disk space and the folder's permissions.")


def exportLabelmap(pair: TrainingPair, mapping: dict[str, str | None], labels: list[dict], segmentationsLogic=None) -> np.ndarray:
    """The pair's label map on its volume's grid (z, y, x), voxel values the model's label values.

    The segmentations logic exports the mapped segments with the volume as reference geometry, which
    resamples a segmentation drawn on another grid (nearest neighbour on its binary labelmaps)."""
    logic = segmentationsLogic or slicer.modules.segmentations.logic()
    scene = pair.volumeNode.GetScene()
    segmentation = pair.segmentationNode.GetSegmentation()
    value = {lab["name"]: lab["value"] for lab in labels}
    ids = vtk.vtkStringArray()
    values = []
    for i in range(segmentation.GetNumberOfSegments()):
        label = mapping.get(segmentation.GetNthSegment(i).GetName())
        if label:
            ids.InsertNextValue(segmentation.GetNthSegmentID(i))
            values.append(value[label])
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__MultiModalSeg_training_export__")
    try:
        if not logic.ExportSegmentsToLabelmapNode(pair.segmentationNode, ids, labelmap, pair.volumeNode):
            raise TrainingError(f"Segmentation '{pair.segmentationNode.GetName()}' could not be exported on the grid of '{pair.volumeNode.GetName()}'; check that it overlaps the volume.")
        index = slicer.util.arrayFromVolume(labelmap)
        lut = np.zeros(len(values) + 1, np.uint8)
        lut[1:] = values
        return lut[np.clip(index, 0, len(values))]
    finally:
        scene.RemoveNode(labelmap)


def exportTrainingDataset(pairs: list[TrainingPair], folder: str | Path, labels: list[dict],
                          overrides: dict[str, str | None] | None = None, modalities: list[str] | None = None,
                          segmentationsLogic=None) -> Path:
    """Write ``imagesTr/`` and ``labelsTr/`` (NIfTI, one image + one label map per pair, on the
    volume's grid) and ``dataset.json`` into ``folder``; returns the ``dataset.json`` path.

    The pairs are checked first (:func:`checkTrainingPairs`), so a bad pair writes nothing.
    """
    checks = checkTrainingPairs(pairs, labels, modalities, overrides)
    folder = Path(folder)
    entries = []
    for i, check in enumerate(checks):
        pair = check.pair
        rel = f"{pair.modality.lower()}_{i:03d}.nii.gz"
        image_path, label_path = folder / "imagesTr" / rel, folder / "labelsTr" / rel
        image_path.parent.mkdir(parents=True, exist_ok=True)
        label_path.parent.mkdir(parents=True, exist_ok=True)
        array = exportLabelmap(pair, check.mapping, labels, segmentationsLogic)
        if not array.any():
            raise TrainingError(f"The segments of {pair.describe()} do not overlap the volume; draw them on this volume.")
        _write_node(pair.volumeNode, image_path)
        labelmap = pair.volumeNode.GetScene().AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__MultiModalSeg_training_label__")
        try:
            matrix = vtk.vtkMatrix4x4()
            pair.volumeNode.GetIJKToRASMatrix(matrix)
            labelmap.SetIJKToRASMatrix(matrix)
            slicer.util.updateVolumeFromArray(labelmap, array)
            _write_node(labelmap, label_path)
        finally:
            pair.volumeNode.GetScene().RemoveNode(labelmap)
        entries.append(({"image": f"imagesTr/{rel}", "label": f"labelsTr/{rel}", "modality": pair.modality,
                         "name": f"{pair.modality.lower()}_{i:03d}"}, pair.heldOut))
    dataset = {
        "name": "slicer-training-pairs",
        "description": "Volumes and segmentations exported from a 3D Slicer scene by the MultiModalSeg module: "
                       + "; ".join(c.summary() for c in checks),
        "licence": "local data (not for redistribution unless its owner says so)",
        "labels": {"0": "background", **{str(lab["value"]): lab["name"] for lab in labels}},
        "training": [e for e, held in entries if not held],
        "validation": [e for e, held in entries if held],  # scored before and after by mmseg finetune
    }
    path = folder / "dataset.json"
    path.write_text(json.dumps(dataset, indent=2) + "\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------- the run


@dataclass
class TrainingSettings:
    """What a fine-tune run needs besides the data. ``init``: manifest name or bundle path (None: default)."""

    init: str | None = None
    method: str = ""  # "" = the init model's own method
    steps: int = 200
    device: str = "auto"
    fewShot: dict[str, int] = field(default_factory=dict)
    newModelName: str = ""  # "" = "<init name>-finetuned-<date>"
    overrides: dict[str, str | None] = field(default_factory=dict)
    phantoms: int | None = None  # replayed phantoms per modality (None: the library's default)
    heldoutPhantoms: int | None = None  # held-out phantoms per modality (None: the library's default)
    validateEvery: int = 50  # held-out Dice every N steps during training too, for the live plot (0: before and after only)


def finetuneCommand(init: Path, settings: TrainingSettings, dataset: Path, runDir: Path, outBundle: Path,
                    name: str) -> list[str]:
    """``mmseg finetune`` as a list of arguments, run with Slicer's Python (``init``: the bundle path)."""
    command = [L.slicer_python(), "-m", "MultiModalSegLib", "finetune", "--init", str(init), "--data", str(dataset.parent),
               "--steps", str(int(settings.steps)), "--device", settings.device or "auto", "--run-dir", str(runDir),
               "--out", str(outBundle), "--name", name, "--quiet",
               "--keep-worse",  # the panel plots the held-out Dice before and after and warns (TrainingJob.worse)
               "--parent-data-root", str(runDir.parent.parent)]  # the data of models fine-tuned here before, found by sha256
    if settings.method:
        command += ["--method", settings.method]
    for modality, n in settings.fewShot.items():
        command += ["--few-shot", f"{modality}={int(n)}"]
    if settings.phantoms is not None:
        command += ["--phantoms", str(int(settings.phantoms))]
    if settings.heldoutPhantoms is not None:
        command += ["--heldout-phantoms", str(int(settings.heldoutPhantoms))]
    if settings.validateEvery and settings.validateEvery > 0:
        command += ["--validate-every", str(int(settings.validateEvery))]
    return command


class TrainingJob(L.ProcessJob):
    """One fine-tune run in a subprocess, followed through its ``progress.jsonl``.

    States: ``running`` -> ``done`` | ``stopped`` (by :meth:`stop`, checkpoint kept) | ``failed`` |
    ``cancelled``; :meth:`resume` runs the same command again (the library resumes from the
    checkpoint). ``history`` holds, for the live plot, the loss per logged step (``"loss"``: [(step,
    loss)]) and the mean held-out Dice (``"dice"``: {"<group> <modality>": [(step, Dice)]}, before
    training at its first step and after at its last); ``model`` is the installed model's name once done.
    """

    def __init__(self, logic: L.MultiModalSegLogic, command: list[str], runDir: Path, outBundle: Path, modelName: str,
                 progress: L.ProgressCallback | None = None, install: bool = True):
        self.logic = logic
        self.runDir = Path(runDir)
        self.outBundle = Path(outBundle)
        self.modelName = modelName
        self.install = install
        self.progress = progress or (lambda fraction, message: None)
        self.state = "running"
        self.error = None
        self.model: str | None = None
        self.worse: list[str] = []  # held-out groups where the new model is worse than its parent ("phantoms CT 0.83 -> 0.72 (-0.11)")
        self.step = 0
        self.steps = 0
        self.history: dict = {"loss": [], "dice": {}}
        self.events: list[dict] = []
        self._offset = 0
        self._stopRequested = False
        self.runDir.mkdir(parents=True, exist_ok=True)
        self._launch(command, cwd=self.runDir)
        self.progress(0.0, "starting the training process")

    @property
    def progressPath(self) -> Path:
        return self.runDir / "progress.jsonl"

    @property
    def checkpointPath(self) -> Path:
        return self.runDir / "checkpoints" / "last.pt"

    # ---- following progress.jsonl
    def readProgress(self) -> list[dict]:
        """Read the records appended since the last call (a partly written last line waits)."""
        try:
            with self.progressPath.open("rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1
        self._offset += end
        records = []
        for line in data[:end].decode("utf-8", "replace").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        for record in records:
            self._record(record)
        return records

    def _record(self, record: dict) -> None:
        self.events.append(record)
        event = record.get("event")
        self.steps = int(record.get("steps", self.steps) or self.steps)
        if "step" in record:
            self.step = int(record["step"])
        fraction = self.step / self.steps if self.steps else 0.0
        if event == "step":
            loss = float(record.get("losses", {}).get("loss", math.nan))
            self.history["loss"].append((self.step, loss))
            eta = record.get("eta_s")
            self.progress(0.95 * fraction, f"step {self.step}/{self.steps}: loss {loss:.4f}" + (f", {eta:.0f} s left" if eta is not None else ""))
        elif event == "evaluation":  # held-out Dice per group per modality: before (parent) and after
            for group, per_modality in (record.get("dice") or {}).items():
                for modality, scores in (per_modality or {}).items():
                    mean = scores.get("mean") if isinstance(scores, dict) else scores
                    value = math.nan if mean is None else float(mean)
                    self.history["dice"].setdefault(f"{groupTitle(group)} {modality}", []).append((self.step, value))
            text = ", ".join(f"{k} {v[-1][1]:.2f}" for k, v in self.history["dice"].items())
            phase = "before training (parent model)" if record.get("phase") == "before" else "after training"
            self.progress(0.95 * fraction, f"held-out Dice {phase}: {text}")
        elif event == "validation":  # held-out Dice per modality during training (--validate-every)
            for modality, scores in (record.get("dice") or {}).items():
                mean = scores.get("mean") if isinstance(scores, dict) else scores
                value = math.nan if mean is None else float(mean)
                self.history["dice"].setdefault(f"validation {modality}", []).append((self.step, value))
            text = ", ".join(f"{k} {v[-1][1]:.2f}" for k, v in self.history["dice"].items() if k.startswith("validation "))
            self.progress(0.95 * fraction, f"held-out Dice at step {self.step}: {text}")
        elif event == "start":
            self.progress(0.95 * fraction, f"training on {record.get('device', '?')} from step {self.step} of {self.steps}")
        elif event == "done":
            self.progress(0.95, "scoring the held-out cases with the new model")
        elif event == "stopped":
            self.progress(0.95 * fraction, f"stopped at step {self.step}; checkpoint kept")

    # ---- the process
    def poll(self) -> bool:
        if self.state == "running":
            self.readProgress()
            stop = self.runDir / "STOP"
            if self._stopRequested and not stop.exists() and self.proc.poll() is None:
                stop.touch()  # the run removes a STOP file when its loop starts: a Stop pressed before then holds
        return super().poll()

    def _finish(self) -> None:
        self.readProgress()
        code = self.proc.returncode
        if code == STOPPED_EXIT_CODE and self.checkpointPath.is_file():
            return
        if code != 0:
            raise TrainingError(self._last_error() or self._exit_sentence("training"))
        if not self.outBundle.exists():
            raise TrainingError(f"The training ended without writing the model {self.outBundle}; see the Python console.")
        table = self.outBundle.parent / f"{self.outBundle.name.removesuffix('.zip')}.finetune.json"
        if table.is_file():
            self.worse = list(json.loads(table.read_text(encoding="utf-8")).get("worse") or [])
        if self.install:
            self.progress(0.97, "installing the new model")
            self.model = installTrainedModel(self.logic, self.outBundle, self.modelName)["name"]

    def _end_state(self) -> str:
        return "stopped" if self.proc.returncode == STOPPED_EXIT_CODE else "done"

    def cancel(self, grace: float | None = None) -> None:
        """End the run with a checkpoint: ask it to stop (``STOP`` file), wait up to ``grace`` seconds
        (default ``process.GRACE_SECONDS``) for it to write the checkpoint and exit, then kill what is left.
        The same on every platform: no signal is needed for the checkpoint."""
        if self.state != "running":
            return
        self.stop()
        deadline = time.monotonic() + (GRACE_SECONDS if grace is None else grace)
        while self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.proc.poll() is not None and self.proc.returncode == STOPPED_EXIT_CODE:
            self.poll()  # ended cleanly: "stopped", the checkpoint kept
            return
        super().cancel()

    def stop(self) -> None:
        """Ask the run to stop after its current step (it writes a checkpoint, then exits)."""
        if self.state == "running":
            self._stopRequested = True
            (self.runDir / "STOP").touch()
            self.progress(0.95 * (self.step / self.steps if self.steps else 0.0), "stopping after the current step")

    def resume(self) -> None:
        """Run the same command again: the library continues from the last checkpoint."""
        if self.state == "running":
            return
        if self.state == "done":
            raise TrainingError("This training is finished; start a new one to train further.")
        (self.runDir / "STOP").unlink(missing_ok=True)
        self.state, self.error, self._stopRequested = "running", None, False
        self._launch(self.command, cwd=self.runDir)
        self.progress(0.95 * (self.step / self.steps if self.steps else 0.0), f"resuming from step {self.step}")


GROUP_TITLES = {"phantoms": "synthetic test scans", "cases": "your held-out scans", "data": "your held-out scans"}


def groupTitle(group: str) -> str:
    """The plot's name of a held-out group of ``mmseg finetune`` ("phantoms" -> "synthetic test scans")."""
    return GROUP_TITLES.get(group, f"held-out {group}")


def trainingFolder() -> Path:
    """``<models cache>/../training`` (``~/.cache/multimodalseg/training``): kept after Slicer exits,
    so that a stopped run can be resumed in a later session."""
    L.ensure_library_importable()
    from MultiModalSegLib.models import models_cache_dir

    return models_cache_dir().parent / "training"


def defaultRunFolder(modelName: str) -> Path:
    return trainingFolder() / modelName


def newModelName(logic: L.MultiModalSegLogic, init: str | None) -> str:
    base = L.read_bundle_metadata(bundlePath(logic, init)).get("name", "model")
    return f"{base}-finetuned-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}"


def startTraining(logic: L.MultiModalSegLogic, pairs: list[TrainingPair], settings: TrainingSettings,
                  runDir: str | Path | None = None, progress: L.ProgressCallback | None = None,
                  segmentationsLogic=None) -> TrainingJob:
    """Check the pairs, export them into ``runDir/data`` and start the fine-tune; returns the job.

    ``runDir`` (default :func:`defaultRunFolder`) holds ``data/`` (the exported dataset), ``run/``
    (checkpoints, ``progress.jsonl``) and the new bundle ``<name>.zip``."""
    init = bundlePath(logic, settings.init)
    labels = modelLabels(logic, settings.init)
    modalities = modelModalities(logic, settings.init)
    name = settings.newModelName or newModelName(logic, settings.init)
    _check_new_name(logic, name)
    checkTrainingPairs(pairs, labels, modalities, settings.overrides)
    runDir = Path(runDir) if runDir is not None else defaultRunFolder(name)
    if (runDir / "run" / "checkpoints" / "last.pt").exists() or (runDir / f"{name}.zip").exists():
        raise TrainingError(f"A training of '{name}' was already run in {runDir}; press Resume to continue it, or give the new model another name.")
    data = runDir / "data"
    if data.exists():
        shutil.rmtree(data)
    dataset = exportTrainingDataset(pairs, data, labels, settings.overrides, modalities, segmentationsLogic)
    outBundle = runDir / f"{name}.zip"
    command = finetuneCommand(init, settings, dataset, runDir / "run", outBundle, name)
    (runDir / COMMAND_FILE).write_text(json.dumps({"command": command, "name": name, "bundle": str(outBundle)}, indent=2),
                                       encoding="utf-8")
    return TrainingJob(logic, command, runDir / "run", outBundle, name, progress)


COMMAND_FILE = "command.json"  # in a training folder: the command, the new model's name and bundle


def resumableTrainings(folder: str | Path | None = None) -> list[tuple[str, Path]]:
    """(model name, run folder) of every stopped training under ``folder`` (default
    :func:`trainingFolder`) that has a checkpoint and no finished model, newest first: the panel
    offers these by name after a restart instead of a folder dialog."""
    root = Path(folder) if folder is not None else trainingFolder()
    found = []
    for command in root.glob(f"*/{COMMAND_FILE}"):
        try:
            saved = json.loads(command.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        run = command.parent
        if not Path(saved.get("bundle", "")).exists() and (run / "run" / "checkpoints" / "last.pt").exists():
            found.append((command.stat().st_mtime, str(saved.get("name", run.name)), run))
    return [(name, run) for _, name, run in sorted(found, key=lambda item: -item[0])]


def resumeTraining(logic: L.MultiModalSegLogic, runDir: str | Path, progress: L.ProgressCallback | None = None) -> TrainingJob:
    """Resume a stopped training of an earlier session from its folder (the one :func:`startTraining`
    made): the same command again, which continues from the last checkpoint."""
    runDir = Path(runDir)
    try:
        saved = json.loads((runDir / COMMAND_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise TrainingError(f"{runDir} holds no training started from this panel ({exc}); choose the folder Start created.") from exc
    if Path(saved["bundle"]).exists():
        raise TrainingError(f"The training in {runDir} is finished; its model is '{saved['name']}' ({saved['bundle']}).")
    return TrainingJob(logic, saved["command"], runDir / "run", Path(saved["bundle"]), saved["name"], progress)


# --------------------------------------------------------------------------- installing the result


def _manifest_path(logic: L.MultiModalSegLogic) -> Path:
    """The per-user manifest fine-tuned models go into (never the extension's own)."""
    return logic.userModelsManifest()


FINETUNED_MARK = "Fine-tuned in 3D Slicer"


def _check_new_name(logic: L.MultiModalSegLogic, name: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise TrainingError(f"'{name}' cannot be a model name; use letters, digits, '.', '_' and '-' only.")
    for model in logic.listModels():
        if model["name"] == name and not model.get("description", "").startswith(FINETUNED_MARK):
            raise TrainingError(f"A model named '{name}' is already in the models manifest; choose another name for the new model.")


def installTrainedModel(logic: L.MultiModalSegLogic, bundle: str | Path, name: str) -> dict:
    """Copy a fine-tuned bundle (.zip) into the per-user models folder (``Models/`` beside the user
    manifest, in the models cache), add its entry to that manifest and check that the model zoo lists
    it as installed; returns name, version, path. Any failure is one ``TrainingError`` sentence."""
    L.ensure_library_importable()
    from MultiModalSegLib.atomic import atomic_path
    from MultiModalSegLib.bundle import bundle_sha256
    from MultiModalSegLib.models import add_to_manifest

    bundle = Path(bundle)
    _check_new_name(logic, name)
    meta = L.read_bundle_metadata(bundle)
    manifest = _manifest_path(logic)
    version = str(meta.get("version") or "1.0.0")
    rel = f"Models/{name}-{version}.zip"
    target = manifest.parent / rel
    try:
        with atomic_path(target, suffix=".install") as tmp:
            shutil.copyfile(bundle, tmp)
    except OSError as exc:
        raise TrainingError(f"The new model could not be copied into {manifest.parent} ({exc}); it is kept at {bundle}.") from exc
    training = meta.get("training") or {}
    modalities = meta.get("modalities") or {}
    entry = {
        "name": name,
        "version": version,
        "description": f"{FINETUNED_MARK} from {meta.get('name', 'a model')} ({training.get('steps', '?')} steps): "
                       + str(meta.get("description", "")),
        "method": str(meta.get("method", "unknown")),
        "modalities": list(modalities) if isinstance(modalities, (dict, list)) else [str(modalities)],
        "labels": [lab["name"] for lab in meta.get("labels", [])],
        "spacing": [float(s) for s in meta.get("spacing", [1.0, 1.0, 1.0])],
        "sha256": bundle_sha256(target),
        "file": rel,
        "size": target.stat().st_size,
        "licence": str(meta.get("licence") or "not stated"),
        "training_data": "Volumes and segmentations of a 3D Slicer scene (see the bundle's training metadata).",
        "intended_use": "The annotator's own data: check its results before relying on them.",
        "limitations": "Checked only on the held-out cases of its fine-tuning run (held-out Dice before and after in "
                       "the bundle's metrics); not validated on new patients.",
    }
    try:
        add_to_manifest(entry, manifest)
        listed = [m for m in logic.listModels() if m["name"] == name and m.get("user")]
        if not listed or listed[0]["state"] != "installed":
            raise TrainingError(f"The new model was copied to {target} but is not listed as installed; see the Python console.")
        return {"name": name, "version": version, "path": str(target)}
    except L.SegmentationError:
        raise
    except Exception as exc:  # BundleError / ConfigError / OSError: one sentence already
        raise TrainingError(f"The new model could not be installed ({exc}); it is kept at {bundle}.") from exc


# --------------------------------------------------------------------------- the live plot


def _table(scene, name: str, columns: list[str], rows: list[list[float]]):
    node = scene.GetFirstNodeByName(name)
    if node is None or not node.IsA("vtkMRMLTableNode"):
        node = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    table = node.GetTable()
    wasModifying = node.StartModify()
    table.Initialize()
    for column in columns:
        array = vtk.vtkDoubleArray()
        array.SetName(column)
        table.AddColumn(array)
    table.SetNumberOfRows(len(rows))
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            table.SetValue(r, c, vtk.vtkVariant(float(value)))
    node.Modified()
    node.EndModify(wasModifying)
    return node


def trainingPlotViewNode(scene, chart, owner=None):
    """The plot view node showing ``chart`` in the panel's ``qMRMLPlotWidget`` (created once). Its
    parent layout node is ``owner`` (the module's parameter node), so that the view layout does
    not claim it."""
    name = f"{PLOT_NAME} view"
    view = scene.GetFirstNodeByName(name)
    if view is None or not view.IsA("vtkMRMLPlotViewNode"):
        view = scene.AddNewNodeByClass("vtkMRMLPlotViewNode", name)
        if owner is not None:
            view.SetAndObserveParentLayoutNodeID(owner.GetID())
    view.SetPlotChartNodeID(chart.GetID())
    return view


def _series(scene, name: str, table, x: str, y: str, colour: tuple[float, float, float], markers: bool):
    node = scene.GetFirstNodeByName(name)
    if node is None or not node.IsA("vtkMRMLPlotSeriesNode"):
        node = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", name)
    node.SetAndObserveTableNodeID(table.GetID())
    node.SetXColumnName(x)
    node.SetYColumnName(y)
    node.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
    node.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleCircle if markers else slicer.vtkMRMLPlotSeriesNode.MarkerStyleNone)
    node.SetColor(*colour)
    return node


COLOURS = ((0.85, 0.2, 0.2), (0.2, 0.45, 0.85), (0.2, 0.65, 0.3), (0.6, 0.3, 0.7))
PLOT_NAME = "MultiModalSeg training"


def updateTrainingPlot(scene, history: dict):
    """Loss and held-out Dice (per group and modality) of ``history`` (see :class:`TrainingJob`) as
    MRML tables, plot series and one chart node (created once, updated in place); returns the
    ``vtkMRMLPlotChartNode`` (the panel shows it in a ``qMRMLPlotWidget``)."""
    loss = _table(scene, f"{PLOT_NAME} loss", ["step", "loss"], [[s, v] for s, v in history.get("loss", [])])
    keys = list(history.get("dice", {}))  # "<held-out group> <modality>"
    steps = sorted({s for values in history.get("dice", {}).values() for s, _ in values})
    by_step = {k: dict(history["dice"][k]) for k in keys}
    dice = _table(scene, f"{PLOT_NAME} Dice", ["step", *[f"Dice {k}" for k in keys]],
                  [[s, *[by_step[k].get(s, math.nan) for k in keys]] for s in steps])
    chart = scene.GetFirstNodeByName(PLOT_NAME)
    if chart is None or not chart.IsA("vtkMRMLPlotChartNode"):
        chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", PLOT_NAME)
        chart.SetTitle("Fine-tuning: training loss, held-out Dice before, during and after")
        chart.SetXAxisTitle("step")
        chart.SetYAxisTitle("loss / Dice")
    series = [_series(scene, f"{PLOT_NAME} series loss", loss, "step", "loss", COLOURS[0], False)]
    for i, key in enumerate(keys):
        series.append(_series(scene, f"{PLOT_NAME} series Dice {key}", dice, "step", f"Dice {key}",
                              COLOURS[1 + i % (len(COLOURS) - 1)], True))
    for node in series:
        if not chart.HasPlotSeriesNodeID(node.GetID()):
            chart.AddAndObservePlotSeriesNodeID(node.GetID())
    return chart
