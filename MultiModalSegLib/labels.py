"""Label definitions: names, display colours and SNOMED CT codes, and source-label remapping tables."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class LabelInfo:
    """One output class of a model. ``value`` is the voxel value in the label map (0 = background)."""

    value: int
    name: str
    color: tuple[int, int, int]
    snomed: str | None = None  # SNOMED CT concept id of the structure, when there is one

    def to_dict(self) -> dict:
        d = asdict(self)
        d["color"] = list(self.color)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> LabelInfo:
        return cls(int(d["value"]), str(d["name"]), tuple(int(c) for c in d["color"]), d.get("snomed"))


# The papers' four-organ abdominal task. Colours follow Slicer's generic anatomy colour table.
ABDOMEN_LABELS: tuple[LabelInfo, ...] = (
    LabelInfo(1, "liver", (221, 130, 101), "10200004"),
    LabelInfo(2, "spleen", (157, 108, 162), "78961009"),
    LabelInfo(3, "kidney_right", (185, 102, 83), "9846003"),
    LabelInfo(4, "kidney_left", (185, 102, 83), "18639004"),
)

# Source label id -> model label value. TotalSegmentator "total" and "total_mr" share these ids.
LABEL_REMAPS: dict[str, dict[int, int]] = {
    "totalsegmentator": {5: 1, 1: 2, 2: 3, 3: 4},
}


def labels_by_name(labels: tuple[LabelInfo, ...] | list[LabelInfo]) -> dict[str, LabelInfo]:
    return {lab.name: lab for lab in labels}
