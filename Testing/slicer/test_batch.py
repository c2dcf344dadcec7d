"""The Slicer batch script's function on real MRML classes: it segments, saves, and skips finished cases."""

from __future__ import annotations

import sys

import pytest

from MultiModalSegLib.io import read_segmentation_info, write_image_atomic
from Testing.conftest import load_script as load_repo_script
from Testing.conftest import real_mr_crop
from Testing.slicer.conftest import REPO, Scene

SCRIPT = REPO / "MultiModalSeg" / "Resources" / "Scripts" / "batch_segment.py"


def load_script():
    return load_repo_script(str(SCRIPT.relative_to(REPO)))


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """One batch over a folder holding the real MR sample (the part of its slices that holds its organs:
    ``real_mr_crop``), then a rerun over a CSV list of it."""
    work = tmp_path_factory.mktemp("batch")
    (work / "in").mkdir()
    write_image_atomic(real_mr_crop().to_sitk(), work / "in" / "mr01.nii.gz")
    (work / "in" / "list.csv").write_text("image\nmr01.nii.gz\n")
    script = load_script()
    scene = Scene()
    logic = script.L.MultiModalSegLogic(scene.scene, tempRoot=work)
    first_log: list[str] = []
    first = script.run_batch([str(work / "in" / "mr01.nii.gz")], work / "out", logic=logic,
                             load_volume=scene.load_volume, quality="fast", log=first_log.append)
    mtime = (work / "out" / "mr01.seg.nrrd").stat().st_mtime_ns
    second_log: list[str] = []
    second = script.run_batch([str(work / "in" / "list.csv")], work / "out", logic=logic,
                              load_volume=scene.load_volume, log=second_log.append)
    return work, scene, first, first_log, second, second_log, mtime


def test_first_run_segments_and_saves(batch):
    work, scene, first, log, *_ = batch
    assert first == {"done": ["mr01"], "skipped": [], "failed": []}
    names = [lab.name for lab in read_segmentation_info(work / "out" / "mr01.seg.nrrd")]
    assert names == ["Liver", "Spleen", "Right kidney", "Left kidney"]  # the names the panel shows
    assert log[-1] == "summary: 1 segmented, 0 skipped (already done), 0 failed"
    # the batch leaves neither nodes nor temporary files behind
    assert scene.segmentation_nodes() == []
    assert scene.scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == 0
    assert sorted(p.name for p in work.iterdir()) == ["in", "out"]
    assert sorted(p.name for p in (work / "out").iterdir()) == ["mr01.seg.nrrd"]


def test_rerun_skips_finished_cases(batch):
    work, _, _, _, second, log, mtime = batch
    assert second == {"done": [], "skipped": ["mr01"], "failed": []}
    assert (work / "out" / "mr01.seg.nrrd").stat().st_mtime_ns == mtime
    assert log[-1] == "summary: 0 segmented, 1 skipped (already done), 0 failed"


def test_bad_case_is_reported_and_the_batch_goes_on(tmp_path):
    script = load_script()
    scene = Scene()
    (tmp_path / "flat.nii.gz").write_bytes(b"not an image")
    log: list[str] = []
    summary = script.run_batch([str(tmp_path / "flat.nii.gz")], tmp_path / "out",
                               logic=script.L.MultiModalSegLogic(scene.scene, tempRoot=tmp_path),
                               load_volume=lambda p: None, log=log.append)
    assert summary == {"done": [], "skipped": [], "failed": ["flat"]}
    assert "could not be loaded as a volume" in log[0]
    assert script.parse_args(["--input", "a", "--output", "b", "--quality", "fast"]).quality == "fast"


def test_batch_installs_missing_packages_first(monkeypatch):
    """A stock Slicer running the batch script gets the packages installed (pip's output printed)."""
    script = load_script()
    from MultiModalSegModuleLib import dependencies

    monkeypatch.setattr(script.L, "missing_packages", lambda: ["monai"])  # before the install
    monkeypatch.setattr(dependencies, "missing_packages", lambda: [])  # the install job's check after it
    commands: list = []

    def fake_commands(names, constraints, python=None):
        commands.append((names, constraints.read_text()))
        return [[sys.executable, "-c", "print('Successfully installed monai')"]]

    monkeypatch.setattr(dependencies, "install_commands", fake_commands)
    log: list[str] = []
    assert script.ensure_dependencies(log=log.append) == ["monai"]
    assert commands[0][0] == ["monai"] and "numpy==" in commands[0][1]  # Slicer's numpy pinned
    assert "Successfully installed monai" in log
    with pytest.raises(script.L.SegmentationError, match="lacks monai; run without --no-install"):
        script.ensure_dependencies(install=False)
