"""The real labelled scans of ``../shared/data``: one table that every real-scan evaluation reads.

``abdomen_ct_01`` and ``abdomen_mr_01`` are the project's training scans (copies, with their
attribution, in ``Resources/SampleData``); ``chest_abdomen_ct_02`` is the validation scan: no recipe
trains on it, not even its label map. It runs from the neck to L3 and cuts both kidneys off at its
lower edge, so only its liver and spleen are scored. Labels are TotalSegmentator-style maps
(``label_totalseg.nii.gz``), remapped to the abdomen labels before scoring.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
ALL_ORGANS = ("liver", "spleen", "kidney_right", "kidney_left")


@dataclass(frozen=True)
class RealScan:
    """One real scan: its folder name, modality, the organs scored on it and its role in the project."""

    name: str
    modality: str
    organs: tuple[str, ...]
    project_role: str  # "train" or "validation"

    def image(self, root: Path = SHARED_DATA) -> Path:
        return root / self.name / "image.nii.gz"

    def label(self, root: Path = SHARED_DATA) -> Path:
        return root / self.name / "label_totalseg.nii.gz"

    def structures(self, volume, root: Path = SHARED_DATA):
        """The scan's full label map (TotalSegmentator ids) on ``volume``'s grid."""
        from MultiModalSegLib.io import read_labelmap

        return read_labelmap(self.label(root), reference=volume).array

    def reference(self, volume, root: Path = SHARED_DATA):
        """The scan's reference labels on ``volume``'s grid, remapped to the abdomen label values."""
        return abdomen_labels(self.structures(volume, root))


def abdomen_labels(structures):
    """A TotalSegmentator label map remapped to the abdomen label values (other structures: 0)."""
    from MultiModalSegLib.labels import LABEL_REMAPS
    from MultiModalSegLib.metrics import remap_labels

    return remap_labels(structures, LABEL_REMAPS["totalsegmentator"])


REAL_SCANS = (
    RealScan("chest_abdomen_ct_02", "CT", ("liver", "spleen"), "validation"),
    RealScan("abdomen_ct_01", "CT", ALL_ORGANS, "train"),
    RealScan("abdomen_mr_01", "MR", ALL_ORGANS, "train"),
)


def real_scan(name: str) -> RealScan:
    """The scan called ``name`` (KeyError naming the known scans otherwise)."""
    for scan in REAL_SCANS:
        if scan.name == name:
            return scan
    raise KeyError(f"{name}: not a real scan of the project; known: {', '.join(s.name for s in REAL_SCANS)}")
