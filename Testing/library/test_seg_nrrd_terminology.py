"""Segment terminology in ``.seg.nrrd`` files: Slicer's type + laterality modifier on writing, the
label's own SNOMED CT code back on reading."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from MultiModalSegLib.io import Volume, read_segmentation_info, write_segmentation
from MultiModalSegLib.labels import ABDOMEN_LABELS


def test_kidneys_are_written_as_kidney_with_a_side_and_read_back(tmp_path):
    array = np.zeros((4, 5, 6), np.uint8)
    for value in (1, 2, 3, 4):
        array[value - 1, 0, 0] = value
    volume = Volume(array, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    path = write_segmentation(volume, tmp_path / "out.seg.nrrd", list(ABDOMEN_LABELS))
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    tags = {reader.GetMetaData(f"Segment{i}_Name"): reader.GetMetaData(f"Segment{i}_Tags") for i in range(4)}
    assert "~SCT^10200004^Liver~^^~" in tags["liver"]
    assert "~SCT^64033007^Kidney~SCT^24028007^Right~" in tags["kidney_right"]
    assert "~SCT^64033007^Kidney~SCT^7771000^Left~" in tags["kidney_left"]
    assert {lab.name: lab.snomed for lab in read_segmentation_info(path)} == {
        lab.name: lab.snomed for lab in ABDOMEN_LABELS}  # 9846003 / 18639004 again
