"""The Train section's Logic against real MRML classes (slicer-core) and a real background training process.

A tiny model bundle (U-Net 4-8, 16^3 patches at 8 mm) is written in the fixture; it is fine-tuned
on two small synthetic scans drawn in the scene, stopped after its first step, resumed to the end,
installed in a temporary models manifest and applied to a volume.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from MultiModalSegModuleLib import segmentation_logic as L  # noqa: E402  (conftest puts the module folder on sys.path)
from MultiModalSegModuleLib import train_logic as T  # noqa: E402

from MultiModalSegLib.bundle import bundle_sha256, load_bundle, save_bundle
from MultiModalSegLib.data.dataset import load_dataset
from MultiModalSegLib.methods import build_method
from MultiModalSegLib.models import add_to_manifest
from Testing.slicer.conftest import REPO, Scene, slicer

SHIPPED = REPO / "Resources" / "Models" / "abdomen-ummkd-1.0.0.zip"
LABELS = ["liver", "spleen", "kidney_right", "kidney_left"]


def tiny_bundle(path: Path) -> Path:
    """The shipped model's metadata with a 4-8 U-Net, 16^3 patches at 8 mm, and untrained weights."""
    meta = dict(load_bundle(SHIPPED).metadata)
    network = {"name": "unet3d", "params": {"features": [4, 8]}}
    torch.manual_seed(0)  # untrained weights, the same whichever tests ran before (its output is used as a label)
    method = build_method("ummkd", network, ["CT", "MR"], len(LABELS) + 1)
    meta.update(name="tiny-init", version="0.1.0", network=method.network_spec, spacing=[8.0, 8.0, 8.0],
                patch_size=[16, 16, 16], metrics={}, training={"steps": 0})
    state = {k: v.detach() for k, v in method.inference_network().state_dict().items()}
    return save_bundle(path, meta, state)


def tiny_manifest(folder: Path) -> Path:
    """``folder/Models.json`` whose default model is the tiny model, written to ``folder/Models/``."""
    bundle = tiny_bundle(folder / "Models" / "tiny-init-0.1.0.zip")
    manifest = folder / "Models.json"
    add_to_manifest({"name": "tiny-init", "version": "0.1.0", "description": "tiny test model", "method": "ummkd",
                     "modalities": ["CT", "MR"], "labels": LABELS, "spacing": [8.0, 8.0, 8.0],
                     "sha256": bundle_sha256(bundle), "file": "Models/tiny-init-0.1.0.zip", "licence": "Apache-2.0",
                     "default": True}, manifest)
    return manifest


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """A models manifest holding the tiny model, used by the Logic and (through the environment) by
    the library subprocesses."""
    root = tmp_path_factory.mktemp("zoo")
    manifest = tiny_manifest(root / "Resources")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MMSEG_MODELS_MANIFEST", str(manifest))
        mp.setenv("MMSEG_MODELS_CACHE", str(root / "cache"))
        mp.setenv("OMP_NUM_THREADS", "1")
        yield root, manifest


def volume(scene: Scene, name: str, shape=(24, 24, 24), spacing=(4.0, 4.0, 4.0), origin=(0.0, 0.0, 0.0), ct=True):
    rng = np.random.default_rng(len(name))
    array = (rng.normal(-100 if ct else 100, 10, shape)).astype(np.int16)
    array[6:16, 4:14, 4:14] = 60 if ct else 400
    node = scene.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    slicer.util.updateVolumeFromArray(node, array)
    node.SetSpacing(*spacing)
    node.SetOrigin(*origin)
    return node


def segmentation(scene: Scene, name: str, blocks: dict[str, tuple[slice, ...]], shape, spacing, origin):
    """A segmentation whose segments are drawn as boxes (z, y, x index slices) on the given grid."""
    node = scene.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    for i, (segment, box) in enumerate(blocks.items(), start=1):
        array = np.zeros(shape, np.uint8)
        array[box] = i
        labelmap = scene.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", f"{name} {segment}")
        slicer.util.updateVolumeFromArray(labelmap, array)
        labelmap.SetSpacing(*spacing)
        labelmap.SetOrigin(*origin)
        assert scene.segmentations.ImportLabelmapToSegmentationNode(labelmap, node)
        seg = node.GetSegmentation()
        seg.GetNthSegment(seg.GetNumberOfSegments() - 1).SetName(segment)
        scene.scene.RemoveNode(labelmap)
    return node


@pytest.fixture()
def scene(zoo):
    return Scene()


def test_segment_names_and_terminology_map_to_model_labels(scene, zoo):
    labels = T.modelLabels(L.MultiModalSegLogic(scene.scene), None)
    assert [lab["name"] for lab in labels] == LABELS
    seg = segmentation(scene, "mine", {"Liver": np.s_[1:2], "Right Kidney": np.s_[2:3], "kidney L": np.s_[3:4],
                                       "Spleen ": np.s_[4:5], "tumour": np.s_[5:6], "Tissue": np.s_[6:7]},
                       (8, 8, 8), (1, 1, 1), (0, 0, 0))
    # "Tissue" carries a terminology whose type code is the spleen's (SNOMED 78961009)
    tissue = seg.GetSegmentation().GetNthSegment(5)
    tissue.SetTerminology("Segmentation category and type - 3D Slicer General Anatomy list~SCT^123037004^Anatomical "
                          "Structure~SCT^78961009^Spleen~^^~Anatomic codes - DICOM master list~^^~^^")
    assert T.segmentLabelMapping(seg, labels) == {
        "Liver": "liver", "Right Kidney": "kidney_right", "kidney L": "kidney_left", "Spleen ": "spleen",
        "tumour": None, "Tissue": "spleen"}
    mapping = T.segmentLabelMapping(seg, labels, {"tumour": "liver", "Liver": None})
    assert mapping["tumour"] == "liver" and mapping["Liver"] is None
    with pytest.raises(T.TrainingError, match="names label 'pancreas', which the model lacks"):
        T.segmentLabelMapping(seg, labels, {"tumour": "pancreas"})


def test_no_segments_and_no_matching_segment_fail_before_training(scene, zoo, tmp_path):
    logic = L.MultiModalSegLogic(scene.scene)
    ct = volume(scene, "ct")
    empty = scene.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "empty seg")
    settings = T.TrainingSettings(steps=2, newModelName="never")
    with pytest.raises(T.TrainingError) as info:
        T.startTraining(logic, [T.TrainingPair(ct, empty, "CT")], settings, tmp_path / "run1", segmentationsLogic=scene.segmentations)
    assert str(info.value) == "Segmentation 'empty seg' has no segments; draw the organs in the Segment Editor before training."
    other = segmentation(scene, "other seg", {"tumour": np.s_[2:5], "vessel": np.s_[6:8]}, (24, 24, 24), (4, 4, 4), (0, 0, 0))
    with pytest.raises(T.TrainingError) as info:
        T.startTraining(logic, [T.TrainingPair(ct, other, "CT")], settings, tmp_path / "run2", segmentationsLogic=scene.segmentations)
    assert str(info.value) == (
        "None of the segments of 'other seg' (tumour, vessel) matches a label of the model "
        "(liver, spleen, kidney_right, kidney_left); rename the segments or set their labels in the mapping table.")
    with pytest.raises(T.TrainingError, match="There are no training pairs"):
        T.startTraining(logic, [], settings, tmp_path / "run3")
    with pytest.raises(T.TrainingError, match="Every pair is held out"):
        T.startTraining(logic, [T.TrainingPair(ct, other, "CT", heldOut=True)], settings, tmp_path / "run3")
    assert not any((tmp_path / f"run{i}").exists() for i in (1, 2, 3))  # nothing written, no process


def test_pairs_and_mapping_choices_live_in_the_parameter_node(scene, zoo, tmp_path):
    logic = L.MultiModalSegLogic(scene.scene)
    node = logic.getParameterNode()
    ct, mr = volume(scene, "ct"), volume(scene, "mr", ct=False)
    seg_ct = segmentation(scene, "s ct", {"liver": np.s_[6:16, 4:14, 4:14]}, (24, 24, 24), (4, 4, 4), (0, 0, 0))
    seg_mr = segmentation(scene, "s mr", {"liver": np.s_[6:16, 4:14, 4:14]}, (24, 24, 24), (4, 4, 4), (0, 0, 0))
    T.addTrainingPair(node, ct, seg_ct, "CT")
    T.addTrainingPair(node, mr, seg_mr, "auto", heldOut=True)  # auto: the library's detection (bright: MR)
    with pytest.raises(T.TrainingError, match="already in the training pairs"):
        T.addTrainingPair(node, ct, seg_ct, "CT")
    pairs = T.getTrainingPairs(node)
    assert [(p.volumeNode, p.segmentationNode, p.modality) for p in pairs] == [(ct, seg_ct, "CT"), (mr, seg_mr, "MR")]
    assert [p.heldOut for p in pairs] == [False, True]
    T.updateTrainingPair(node, 1, heldOut=False)
    T.removeTrainingPair(node, 0)
    assert [p.describe() for p in T.getTrainingPairs(node)] == ["'s mr' on 'mr' (MR)"]
    T.updateTrainingPair(node, 0, modality="CT", heldOut=True)
    assert [p.describe() for p in T.getTrainingPairs(node)] == ["'s mr' on 'mr' (CT, held out)"]
    T.addTrainingPair(node, ct, seg_ct, "CT")
    T.setLabelOverride(node, "liver", None)
    T.setLabelOverride(node, "tumour", "spleen")

    # a saved scene restores the pairs and the mapping choices
    scene.scene.SetURL(str(tmp_path / "scene.mrml"))
    assert scene.scene.Commit()
    restored = Scene()
    restored.scene.SetURL(str(tmp_path / "scene.mrml"))
    restored.scene.Connect()
    again = L.MultiModalSegLogic(restored.scene).getParameterNode()
    assert [p.describe() for p in T.getTrainingPairs(again)] == ["'s mr' on 'mr' (CT, held out)", "'s ct' on 'ct' (CT)"]
    assert T.getLabelOverrides(again) == {"liver": None, "tumour": "spleen"}

    # the mapping table's rows: one per segment name, the override applied
    labels = T.modelLabels(logic, None)
    assert T.mappingRows(T.getTrainingPairs(node), labels, T.getLabelOverrides(node)) == [("liver", None)]
    assert T.mappingRows(T.getTrainingPairs(node), labels) == [("liver", "liver")]
    # a deleted volume drops its pair
    scene.scene.RemoveNode(mr)
    assert [p.describe() for p in T.getTrainingPairs(node)] == ["'s ct' on 'ct' (CT)"]
    assert {"ummkd", "csa", "lssc", "mulmodseg", "cmc"} <= set(T.methodNames())


def test_export_writes_nifti_and_dataset_json_resampling_an_off_grid_segmentation(scene, zoo, tmp_path):
    logic = L.MultiModalSegLogic(scene.scene)
    labels = T.modelLabels(logic, None)
    ct = volume(scene, "ct", origin=(10.0, -20.0, 30.0))
    # drawn on a grid twice as fine, shifted by half a fine voxel: fine voxels 2a..2b-1 cover volume voxels a..b-1
    fine = segmentation(scene, "fine", {"Liver": np.s_[12:32, 8:28, 8:28], "right kidney": np.s_[4:8, 30:36, 34:40],
                                        "tumour": np.s_[20:24, 20:24, 20:24]},
                        (48, 48, 48), (2.0, 2.0, 2.0), (9.0, -21.0, 29.0))
    mr = volume(scene, "mr", ct=False)
    on_grid = segmentation(scene, "mr seg", {"spleen": np.s_[6:16, 4:14, 4:14]}, (24, 24, 24), (4, 4, 4), (0, 0, 0))
    pairs = [T.TrainingPair(ct, fine, "CT"), T.TrainingPair(mr, on_grid, "MR", heldOut=True)]
    checks = T.checkTrainingPairs(pairs, labels, ["CT", "MR"])
    assert [(c.unknown, c.missing) for c in checks] == [
        (["tumour"], ["spleen", "kidney_left"]), ([], ["liver", "kidney_right", "kidney_left"])]
    assert [c.newModality for c in T.checkTrainingPairs(pairs, labels, ["CT"])] == [False, True]
    with pytest.raises(T.TrainingError, match=r"^Modality 'PET' of 'fine' on 'ct' \(PET\) is not one MultiModalSeg knows \(CT, "):
        T.checkTrainingPairs([T.TrainingPair(ct, fine, "PET")], labels, ["CT", "MR"])
    path = T.exportTrainingDataset(pairs, tmp_path / "data", labels, segmentationsLogic=scene.segmentations)

    spec = load_dataset(path)  # the library's own reader accepts it
    assert spec.labels == {0: "background", 1: "liver", 2: "spleen", 3: "kidney_right", 4: "kidney_left"}
    assert [(c.modality, c.image.name) for c in spec.cases("training")] == [("CT", "ct_000.nii.gz")]
    assert [(c.modality, c.image.name) for c in spec.cases("validation")] == [("MR", "mr_001.nii.gz")]  # held out
    raw = json.loads(path.read_text())
    assert "tumour" in raw["description"] and "not drawn" in raw["description"]

    image = sitk.ReadImage(str(tmp_path / "data" / "imagesTr" / "ct_000.nii.gz"))
    label = sitk.ReadImage(str(tmp_path / "data" / "labelsTr" / "ct_000.nii.gz"))
    assert np.array_equal(sitk.GetArrayFromImage(image), slicer.util.arrayFromVolume(ct))
    for img in (image, label):  # the volume's grid, in LPS
        assert img.GetSize() == (24, 24, 24) and img.GetSpacing() == (4.0, 4.0, 4.0)
        assert np.allclose(img.GetOrigin(), (-10.0, 20.0, 30.0))
    expected = np.zeros((24, 24, 24), np.uint8)
    expected[6:16, 4:14, 4:14] = 1  # liver
    expected[2:4, 15:18, 17:20] = 3  # right kidney; the tumour is left out
    assert np.array_equal(sitk.GetArrayFromImage(label), expected)
    mr_label = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "data" / "labelsTr" / "mr_001.nii.gz")))
    assert set(np.unique(mr_label)) == {0, 2} and int((mr_label == 2).sum()) == 1000


def wait_for(job, condition, seconds=300.0):
    """Poll ``job`` until ``condition``; the limit leaves room for a busy machine (a start takes 10-30 s idle)."""
    deadline = time.monotonic() + seconds
    while not condition():
        job.poll()
        assert time.monotonic() < deadline, (job.state, job.events, job.stderr[-5:])
        time.sleep(0.05)


@pytest.mark.slow
def test_train_stop_resume_install_and_apply(scene, zoo, tmp_path):
    _, manifest = zoo
    shipped_manifest, shipped_files = manifest.read_text(), sorted(manifest.parent.rglob("*"))
    logic = L.MultiModalSegLogic(scene.scene, tempRoot=tmp_path)
    ct = volume(scene, "ct")
    mr = volume(scene, "mr", ct=False)
    box = np.s_[6:16, 4:14, 4:14]
    held = volume(scene, "held-out ct")
    pairs = [T.TrainingPair(ct, segmentation(scene, "ct seg", {"Liver": box}, (24, 24, 24), (4, 4, 4), (0, 0, 0)), "CT"),
             T.TrainingPair(mr, segmentation(scene, "mr seg", {"liver": box}, (24, 24, 24), (4, 4, 4), (0, 0, 0)), "MR"),
             T.TrainingPair(held, segmentation(scene, "held seg", {"liver": box}, (24, 24, 24), (4, 4, 4), (0, 0, 0)), "CT",
                            heldOut=True)]
    reports: list[tuple[float, str]] = []
    # no phantoms mixed in or held out: the run trains on the two pairs and scores the held-out one
    settings = T.TrainingSettings(steps=20, device="cpu", newModelName="tiny-finetuned", phantoms=0, heldoutPhantoms=0,
                                  validateEvery=10)
    job = T.startTraining(logic, pairs, settings, tmp_path / "train", lambda f, m: reports.append((f, m)),
                          segmentationsLogic=scene.segmentations)
    assert isinstance(job, L.ProcessJob) and job.proc.pid > 0 and job.state == "running"

    wait_for(job, lambda: any(e["event"] == "start" for e in job.events))
    job.stop()  # the run stops after its current step, with a checkpoint
    job.wait()
    assert job.state == "stopped" and job.proc.returncode == T.STOPPED_EXIT_CODE
    assert job.checkpointPath.is_file() and job.model is None
    stopped_at = job.step
    # after a restart the panel lists it by name (no folder dialog on a hidden cache folder)
    assert T.resumableTrainings(tmp_path) == [("tiny-finetuned", tmp_path / "train")]
    assert 1 <= stopped_at < 20 and [e["event"] for e in job.events][-1] == "stopped"
    assert job.history["loss"] and job.history["loss"][0][0] == 1

    job.resume()  # the same command again: continues from the checkpoint
    assert job.state == "running"
    job.wait()
    assert job.state == "done", job.error
    starts = [e for e in job.events if e["event"] == "start"]
    assert [s["step"] for s in starts] == [0, stopped_at]
    assert [s for s, _ in job.history["loss"]] == list(range(1, 21))
    # held-out Dice of the parent before (step 0) and of the new model after (step 20), and during training
    assert list(job.history["dice"]) == ["your held-out scans CT", "validation CT"]  # plain-language plot labels
    assert [s for s, _ in job.history["dice"]["your held-out scans CT"]] == [0, 20]
    assert [s for s, _ in job.history["dice"]["validation CT"]] == [10, 20]
    assert all(0 <= d <= 1 for values in job.history["dice"].values() for _, d in values)
    assert reports[-1] == (1.0, "done") and any("loss" in m for _, m in reports)

    # installed: listed by the model zoo and in the manifest, and applicable at once
    assert job.model == "tiny-finetuned"
    # a model worse than its parent is kept (the panel shows the Dice before and after) and said to be worse
    summary = json.loads(job.outBundle.with_name("tiny-finetuned.finetune.json").read_text())
    assert "--keep-worse" in job.command and job.worse == summary["worse"]
    listed = {m["name"]: m for m in logic.listModels()}
    assert listed["tiny-finetuned"]["state"] == "installed" and listed["tiny-init"]["default"]
    assert Path(listed["tiny-finetuned"]["path"]).read_bytes() == job.outBundle.read_bytes()
    assert listed["tiny-finetuned"]["user"] and not listed["tiny-init"]["user"]
    # into the per-user folder in the models cache; the shipped manifest and its folder are untouched
    user_manifest = logic.userModelsManifest()
    assert user_manifest.parent == Path(zoo[0]) / "cache" / "trained"
    assert Path(listed["tiny-finetuned"]["path"]).parent == user_manifest.parent / "Models"
    assert json.loads(user_manifest.read_text())["models"][-1]["description"].startswith(T.FINETUNED_MARK)
    assert manifest.read_text() == shipped_manifest and sorted(manifest.parent.rglob("*")) == shipped_files
    result = logic.process(ct, "CT", "tiny-finetuned", device="cpu")
    names = [result.GetSegmentation().GetNthSegment(i).GetName() for i in range(result.GetSegmentation().GetNumberOfSegments())]
    assert set(names) <= {"Liver", "Spleen", "Right kidney", "Left kidney"}

    chart = T.updateTrainingPlot(scene.scene, job.history)
    assert chart.GetNumberOfPlotSeriesNodes() == 3  # loss, held-out Dice of the CT pair before/after and during
    loss_table = scene.scene.GetFirstNodeByName(f"{T.PLOT_NAME} loss").GetTable()
    assert loss_table.GetNumberOfRows() == 20 and loss_table.GetValue(19, 0).ToDouble() == 20.0
    assert T.updateTrainingPlot(scene.scene, job.history) is chart  # updated in place
    assert scene.scene.GetNumberOfNodesByClass("vtkMRMLPlotChartNode") == 1
    owner = logic.getParameterNode()
    view = T.trainingPlotViewNode(scene.scene, chart, owner)
    assert view.GetPlotChartNodeID() == chart.GetID() and view.GetParentLayoutNode() is owner
    assert T.trainingPlotViewNode(scene.scene, chart, owner) is view

    with pytest.raises(T.TrainingError, match="already in the models manifest"):
        T.installTrainedModel(logic, job.outBundle, "tiny-init")  # a shipped model is never replaced
    # the folder is not reused by a new Start, and a finished run cannot be resumed
    with pytest.raises(T.TrainingError, match="was already run in"):
        T.startTraining(logic, pairs, settings, tmp_path / "train", segmentationsLogic=scene.segmentations)
    with pytest.raises(T.TrainingError, match="is finished; its model is 'tiny-finetuned'"):
        T.resumeTraining(logic, tmp_path / "train")
    assert T.resumableTrainings(tmp_path) == []  # finished: no longer offered
