"""The module's Logic against real MRML classes (slicer-core) and the real ``mmseg segment`` subprocess."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from MultiModalSegModuleLib import segmentation_logic as L  # noqa: E402  (conftest puts the module folder on sys.path)
from MultiModalSegModuleLib.segment_names import display_name  # noqa: E402

from MultiModalSegLib.io import read_segmentation_info, write_image_atomic
from MultiModalSegLib.models import load_manifest
from MultiModalSegLib.terminology import terminology_entry
from Testing.conftest import REAL_CT, real_ct_organ_slab
from Testing.slicer.conftest import REPO, Scene, slicer


@pytest.fixture(scope="module")
def ct_run(tmp_path_factory):
    """One Logic run and one direct ``mmseg segment`` run of the real CT's slices that hold its four organs
    (``real_ct_organ_slab``) with the default model, at ``--quality fast`` (the same subprocess and files as
    normal quality, at about a third of the network's time); the default model finds all four organs in
    these slices at that quality."""
    work = tmp_path_factory.mktemp("ct_run")
    scan = write_image_atomic(real_ct_organ_slab().to_sitk(), work / "ct_slab.nii.gz")
    scene = Scene()
    volume = scene.load_volume(scan, "abdomen CT")
    logic = L.MultiModalSegLogic(scene.scene, tempRoot=work / "tmp")
    (work / "tmp").mkdir()
    reports: list[tuple[float, str]] = []
    # the direct run starts first and runs beside the Logic's (two processes: most of each is imports)
    direct = subprocess.Popen(
        [sys.executable, "-m", "MultiModalSegLib", "segment", str(scan), "--quality", "fast", "--output", str(work / "direct")],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        node = logic.process(volume, "auto", None, quality="fast", progress=lambda f, m: reports.append((f, m)))
        _, stderr = direct.communicate(timeout=600)
    finally:
        if direct.poll() is None:
            direct.kill()
    assert direct.returncode == 0, stderr
    return scene, volume, node, reports, work / "direct" / "ct_slab.seg.nrrd", work / "tmp"


def _segments(node) -> list:
    seg = node.GetSegmentation()
    return [seg.GetNthSegment(i) for i in range(seg.GetNumberOfSegments())]


def test_names_colours_and_terminology_match_the_direct_run(ct_run):
    _, _, node, _, direct, _ = ct_run
    expected = read_segmentation_info(direct)
    segments = _segments(node)
    assert [lab.name for lab in expected] == ["liver", "spleen", "kidney_right", "kidney_left"]
    # the panel shows names for people: "kidney_right" -> "Right kidney"
    assert [s.GetName() for s in segments] == ["Liver", "Spleen", "Right kidney", "Left kidney"]
    for segment, lab in zip(segments, expected, strict=True):
        assert np.allclose(segment.GetColor(), np.array(lab.color) / 255, atol=1e-3)
        assert segment.HasTerminology()
        assert segment.GetTerminology() == terminology_entry(lab.snomed, lab.name)  # type + laterality modifier


def test_geometry_and_voxel_counts_match_the_direct_run(ct_run):
    scene, volume, node, _, direct, _ = ct_run
    labelmap = scene.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    assert scene.segmentations.ExportAllSegmentsToLabelmapNode(node, labelmap, 0)
    got = slicer.util.arrayFromVolume(labelmap)
    want = sitk.GetArrayFromImage(sitk.ReadImage(str(direct)))
    assert got.shape == want.shape == slicer.util.arrayFromVolume(volume).shape
    assert np.allclose(_ijk_to_ras(labelmap), _ijk_to_ras(volume))
    names = {lab.value: lab.name for lab in read_segmentation_info(direct)}
    # the exported map numbers segments 1..n in segment order; map them back through the names
    order = [s.GetName() for s in _segments(node)]
    counts = {}
    for value, name in names.items():
        counts[name] = int(np.count_nonzero(want == value))
        assert int(np.count_nonzero(got == order.index(display_name(name)) + 1)) == counts[name], name
    assert all(c > 1000 for c in counts.values()), counts


def _ijk_to_ras(node) -> np.ndarray:
    import vtk

    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return np.array([[m.GetElement(i, j) for j in range(4)] for i in range(4)])


def test_progress_is_followed_and_temporary_files_are_removed(ct_run):
    _, _, _, reports, _, temp_root = ct_run
    fractions = [f for f, _ in reports]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0
    assert fractions == sorted(fractions)
    assert any("network" in m for _, m in reports)
    assert list(temp_root.iterdir()) == []


def test_cancel_kills_the_process_tree_and_leaves_nothing(mrml, tmp_path):
    volume = mrml.load_volume(REAL_CT)
    logic = L.MultiModalSegLogic(mrml.scene, tempRoot=tmp_path)
    reports: list[str] = []
    job = logic.start(volume, "CT", quality="fast", progress=lambda f, m: reports.append(m))
    deadline = time.monotonic() + 60
    while not any("modality" in m for m in reports) and time.monotonic() < deadline:
        assert not job.poll()
        time.sleep(0.05)
    assert any("modality" in m for m in reports), "the subprocess never reported progress"
    job.cancel()
    assert job.state == "cancelled"
    assert job.proc.returncode is not None
    with pytest.raises(ProcessLookupError):
        os.killpg(job.proc.pid, 0)
    assert mrml.segmentation_nodes() == []
    assert list(tmp_path.iterdir()) == []
    assert job.poll() is True and job.segmentationNode is None


def _volume_from_array(scene: Scene, array: np.ndarray, name: str):
    node = scene.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    slicer.util.updateVolumeFromArray(node, array)
    return node


def test_2d_volume_gives_one_clear_sentence(mrml, tmp_path):
    node = _volume_from_array(mrml, np.zeros((1, 32, 32), np.int16), "slice")
    with pytest.raises(L.SegmentationError, match=r"^Volume 'slice' is 2D \(size 32 x 32 x 1\); MultiModalSeg needs a 3D scan\.$"):
        L.MultiModalSegLogic(mrml.scene, tempRoot=tmp_path).process(node, "CT")
    assert list(tmp_path.iterdir()) == [] and mrml.segmentation_nodes() == []


def test_empty_volume_gives_one_clear_sentence(mrml, tmp_path):
    node = mrml.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    with pytest.raises(L.SegmentationError, match=r"^Volume 'empty' holds no image data; load a 3D scan into it\.$"):
        L.MultiModalSegLogic(mrml.scene, tempRoot=tmp_path).process(node)
    with pytest.raises(L.SegmentationError, match="No input volume is selected"):
        L.MultiModalSegLogic(mrml.scene, tempRoot=tmp_path).process(None)
    assert list(tmp_path.iterdir()) == []


def test_subprocess_error_is_reported_as_one_sentence_naming_the_volume(mrml, tmp_path):
    node = _volume_from_array(mrml, np.zeros((8, 8, 8), np.int16), "tiny")
    with pytest.raises(L.SegmentationError) as info:
        L.MultiModalSegLogic(mrml.scene, tempRoot=tmp_path).process(node, "PET")
    message = str(info.value)
    assert "unknown modality 'PET'" in message and "\n" not in message
    assert str(tmp_path) not in message
    assert list(tmp_path.iterdir()) == [] and mrml.segmentation_nodes() == []


def test_existing_segmentation_is_not_overwritten_without_consent(mrml, tmp_path):
    volume = _volume_from_array(mrml, np.zeros((8, 8, 8), np.int16), "tiny")
    existing = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "mine")
    existing.GetSegmentation().AddEmptySegment("tumour", "tumour")
    with pytest.raises(L.SegmentationError, match="'mine' already holds segments"):
        L.MultiModalSegLogic(mrml.scene, tempRoot=tmp_path).process(volume, "CT", outputSegmentation=existing)
    assert existing.GetSegmentation().GetNthSegment(0).GetName() == "tumour"


def test_the_piece_options_reach_the_segment_command(mrml, tmp_path, monkeypatch):
    """``largestComponent`` and ``organLayout`` (both on by default, as in ``mmseg segment``) become
    ``--no-largest-component`` and ``--no-organ-layout`` when turned off."""
    commands = []
    monkeypatch.setattr(L.SegmentationJob, "_launch", lambda job, command, cwd: commands.append(command))
    volume = _volume_from_array(mrml, np.zeros((8, 8, 8), np.int16), "tiny")
    logic = L.MultiModalSegLogic(mrml.scene, tempRoot=tmp_path)
    jobs = [logic.start(volume, "CT"), logic.start(volume, "CT", organLayout=False),
            logic.start(volume, "CT", largestComponent=False, organLayout=False)]
    for job in jobs:
        job._cleanup()
    flags = [[a for a in c if a in ("--no-largest-component", "--no-organ-layout")] for c in commands]
    assert flags == [[], ["--no-organ-layout"], ["--no-largest-component", "--no-organ-layout"]]
    assert list(tmp_path.iterdir()) == []


def test_parameter_node_survives_a_saved_scene(mrml, tmp_path):
    volume = _volume_from_array(mrml, np.zeros((4, 4, 4), np.int16), "scan")
    logic = L.MultiModalSegLogic(mrml.scene)
    logic.setParameters(L.MultiModalSegParameters(volume, "MR", "abdomen-ummkd", "cpu", "fast", None))
    mrml.scene.SetURL(str(tmp_path / "scene.mrml"))
    assert mrml.scene.Commit()
    restored = Scene()
    restored.scene.SetURL(str(tmp_path / "scene.mrml"))
    restored.scene.Connect()
    params = L.MultiModalSegLogic(restored.scene).getParameters()
    assert (params.modality, params.model, params.device, params.quality) == ("MR", "abdomen-ummkd", "cpu", "fast")
    assert params.inputVolume is not None and params.inputVolume.GetName() == "scan"
    assert params.outputSegmentation is None


def test_constraints_pin_slicers_own_packages():
    text = L.constraints_text()
    assert f"numpy=={importlib.metadata.version('numpy')}" in text.splitlines()
    assert f"SimpleITK=={importlib.metadata.version('SimpleITK')}" in text.splitlines()
    assert f"vtk=={importlib.metadata.version('vtk')}" in text.splitlines()
    args = L.pip_install_arguments(["torch", "monai", "nibabel"], Path("c.txt"))
    assert args == ["install", "-c", "c.txt", "monai>=1.4", "nibabel>=5.0"]
    assert L.pip_install_arguments(["torch"], Path("c.txt")) == []
    assert L.missing_packages() == []


def test_models_come_from_the_manifest():
    entries = load_manifest()
    assert [m["name"] for m in L.available_models()] == [e.name for e in entries]
    info = L.model_info(None)
    default = next(e for e in entries if e.default)
    assert info["name"] == default.name and info["labels"] == default.labels
    assert info["modalities"] == default.modalities
    assert L.model_info(info["path"])["labels"] == default.labels
    with pytest.raises(L.SegmentationError, match="neither an existing bundle path nor a known model name"):
        L.model_info("no-such-model")


def test_detect_modality_of_a_volume_node(mrml):
    volume = mrml.load_volume(REAL_CT)
    name, reason = L.detect_modality(volume)
    assert name == "CT" and "HU" in reason
    assert "CT" in L.modality_names() and "MR" in L.modality_names()


def test_an_empty_result_and_a_contradicted_modality_lead_the_status_text(mrml, tmp_path):
    """The library's warnings reach the panel: the Logic reads them from the ``--progress`` result record."""
    import torch

    from MultiModalSegLib.bundle import load_bundle, save_bundle
    from Testing.slicer.test_logic_train import tiny_bundle

    bundle = load_bundle(tiny_bundle(tmp_path / "tiny.zip"))
    state = dict(bundle.state_dict)
    state["head.conv.conv.weight"] = torch.zeros_like(state["head.conv.conv.weight"])
    state["head.conv.conv.bias"] = torch.tensor([10.0, -10.0, -10.0, -10.0, -10.0])  # every voxel background
    background = save_bundle(tmp_path / "background.zip", dict(bundle.metadata), state)
    array = np.full((24, 24, 24), -1000, np.int16)
    array[4:20, 4:20, 4:20] = 40  # a CT: air around soft tissue
    volume = _volume_from_array(mrml, array, "scan")
    (tmp_path / "tmp").mkdir()
    job = L.MultiModalSegLogic(mrml.scene, tempRoot=tmp_path / "tmp").start(volume, "MR", model=str(background))
    job.wait()
    assert job.state == "done" and job.segmentationNode is not None
    assert job.modality == "MR" and len(job.warnings) == 2
    assert job.summary.startswith("Warning: The modality was given as MR but the image looks like CT")
    assert "Warning: No organ was found: every label (liver, spleen, kidney_right, kidney_left) is empty" in job.summary
    assert "Volume 'scan': MR (given by the user); " in job.summary
    assert job.summary.endswith("s; Liver 0 mL, Spleen 0 mL, Right kidney 0 mL, Left kidney 0 mL.")
    assert str(tmp_path) not in job.summary  # no temporary path
