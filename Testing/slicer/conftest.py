"""A headless MRML scene from ``slicer-core`` (real compiled MRML classes, no Qt, no Slicer application)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core is in the test extra: pip install -e '.[test]'")

REPO = Path(__file__).resolve().parents[2]
MODULE_DIR = REPO / "MultiModalSeg"
if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))


class Scene:
    """A scene with the application, colour, volumes and segmentations logics registered."""

    def __init__(self) -> None:
        self.scene = slicer.vtkMRMLScene()
        self.app = slicer.vtkSlicerApplicationLogic()
        self.app.SetMRMLScene(self.scene)
        self.colors = slicer.vtkSlicerColorLogic()
        self.colors.SetMRMLApplicationLogic(self.app)
        self.colors.SetMRMLScene(self.scene)
        self.app.SetColorLogic(self.colors)
        self.app.SetModuleLogic("Colors", self.colors)
        self.volumes = slicer.vtkSlicerVolumesLogic()
        self.volumes.SetMRMLScene(self.scene)
        self.volumes.SetMRMLApplicationLogic(self.app)
        self.segmentations = slicer.vtkSlicerSegmentationsModuleLogic()
        self.segmentations.SetMRMLScene(self.scene)
        self.segmentations.SetMRMLApplicationLogic(self.app)
        self.app.SetModuleLogic("Volumes", self.volumes)
        self.app.SetModuleLogic("Segmentations", self.segmentations)
        slicer.mrmlScene = self.scene

    def load_volume(self, path: Path, name: str = "scan"):
        node = self.volumes.AddArchetypeVolume(str(path), name)
        assert node is not None, path
        return node

    def segmentation_nodes(self) -> list:
        return [self.scene.GetNthNodeByClass(i, "vtkMRMLSegmentationNode")
                for i in range(self.scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode"))]


@pytest.fixture()
def mrml() -> Scene:
    return Scene()


@pytest.fixture(scope="module")
def module_scene() -> Scene:
    return Scene()
