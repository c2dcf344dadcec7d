"""A ``.seg.nrrd`` written by ``mmseg segment`` loads with slicer-core's segmentation storage and its
four segments resolve in Slicer's terminology (type codes and laterality modifiers) with the
recommended colours.

``data/general-anatomy-abdomen.term.json`` is the liver, spleen and kidney part of Slicer's
``SegmentationCategoryTypeModifier-SlicerGeneralAnatomy.json`` (Modules/Loadable/Terminologies/
Resources in Slicer's sources), the list Slicer uses by default.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from MultiModalSegLib.terminology import snomed_from_entry, terminology_entry
from Testing.slicer.conftest import REPO, slicer

TERMINOLOGY = Path(__file__).parent / "data" / "general-anatomy-abdomen.term.json"
MODEL = REPO / "Resources" / "Models" / "abdomen-ummkd-1.0.0.zip"
EXPECTED = {  # segment name: (type code, modifier code, recommended colour)
    "liver": ("10200004", "", (221, 130, 101)),
    "spleen": ("78961009", "", (157, 108, 162)),
    "kidney_right": ("64033007", "24028007", (185, 102, 83)),
    "kidney_left": ("64033007", "7771000", (185, 102, 83)),
}


def test_segments_of_mmseg_segment_resolve_in_slicers_terminology(tmp_path, mrml):
    rng = np.random.default_rng(0)
    image = sitk.GetImageFromArray(rng.normal(-100, 20, (24, 32, 32)).astype(np.int16))
    image.SetSpacing((4.0, 4.0, 4.0))
    sitk.WriteImage(image, str(tmp_path / "ct.nrrd"))
    run = subprocess.run([sys.executable, "-m", "MultiModalSegLib", "segment", str(tmp_path / "ct.nrrd"), "--output",
                          str(tmp_path / "out"), "--model", str(MODEL), "--modality", "CT", "--device", "cpu"],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]

    node = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "result")
    storage = slicer.vtkMRMLSegmentationStorageNode()
    storage.SetFileName(str(tmp_path / "out" / "ct.seg.nrrd"))
    assert storage.ReadData(node)
    terminologies = slicer.vtkSlicerTerminologiesModuleLogic()
    assert terminologies.LoadTerminologyFromFile(str(TERMINOLOGY))
    segmentation = node.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 4
    for i in range(4):
        segment = segmentation.GetNthSegment(i)
        code, modifier, colour = EXPECTED[segment.GetName()]
        entry = slicer.vtkSlicerTerminologyEntry()
        assert terminologies.DeserializeTerminologyEntry(segment.GetTerminology(), entry)
        # found in Slicer's list (the context the entry names): fills in the recommended colours
        assert terminologies.UpdateEntryFromLoadedTerminologies(entry, [entry.GetTerminologyContextName()], []), segment.GetName()
        assert entry.GetTypeObject().GetCodeValue() == code
        assert (entry.GetTypeModifierObject().GetCodeValue() or "") == modifier
        recommended = entry.GetTypeModifierObject() if modifier else entry.GetTypeObject()
        assert tuple(recommended.GetRecommendedDisplayRGBValue()) == colour
        assert tuple(round(c * 255) for c in segment.GetColor()) == colour


def test_lateral_concepts_round_trip():
    right = terminology_entry("9846003", "kidney_right")
    assert "~SCT^64033007^Kidney~SCT^24028007^Right~" in right and snomed_from_entry(right) == "9846003"
    left = terminology_entry("64033007", "kidney_left")  # a label coded as the type: the name gives the side
    assert "~SCT^7771000^Left~" in left and snomed_from_entry(left) == "18639004"
    assert snomed_from_entry(terminology_entry("10200004", "liver")) == "10200004"
