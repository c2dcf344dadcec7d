"""3D Slicer terminology entries of a label: the SNOMED CT type with its laterality modifier.

Slicer's anatomy lists code a left/right organ as one type plus a modifier (Kidney 64033007 with
Right 24028007 or Left 7771000), not as a pre-coordinated "right kidney" concept (9846003,
18639004). A model's labels may carry either form; :func:`terminology_entry` writes Slicer's, so a
segment is found in Slicer's terminology and gets its recommended colour, and
:func:`snomed_from_entry` reads it back to the label's own code.
"""

from __future__ import annotations

CONTEXT = "Segmentation category and type - 3D Slicer General Anatomy list"
REGION_CONTEXT = "Anatomic codes - DICOM master list"
ANATOMICAL_STRUCTURE = "SCT^123037004^Anatomical Structure"

# type meanings of Slicer's anatomy list, by SNOMED CT code
TYPE_MEANINGS = {"10200004": "Liver", "78961009": "Spleen", "64033007": "Kidney"}
MODIFIERS = {"right": ("24028007", "Right"), "left": ("7771000", "Left")}
# pre-coordinated lateral concept -> (type code, laterality)
LATERAL_CONCEPTS = {"9846003": ("64033007", "right"), "18639004": ("64033007", "left")}


def _side_of(name: str) -> str | None:
    words = name.lower().replace("-", "_").split("_")
    return next((w for w in words if w in MODIFIERS), None)


def terminology_entry(snomed: str, name: str) -> str:
    """Slicer's serialised terminology entry of a label (SNOMED CT code ``snomed``, label ``name``)."""
    code, side = LATERAL_CONCEPTS.get(str(snomed), (str(snomed), _side_of(name)))
    meaning = TYPE_MEANINGS.get(code) or name.replace("_", " ").capitalize()
    modifier = "SCT^{}^{}".format(*MODIFIERS[side]) if side else "^^"
    return f"{CONTEXT}~{ANATOMICAL_STRUCTURE}~SCT^{code}^{meaning}~{modifier}~{REGION_CONTEXT}~^^~^^"


def snomed_from_entry(entry: str) -> str | None:
    """The label's SNOMED CT code of a serialised entry: a type with a laterality modifier gives the
    lateral concept (Kidney + Right -> 9846003) when there is one, else the type's code."""
    parts = entry.split("~")
    if len(parts) < 3 or not parts[2].startswith("SCT^"):
        return None
    code = parts[2].split("^")[1] or None
    modifier = parts[3].split("^")[1] if len(parts) > 3 and parts[3].count("^") >= 2 else ""
    for concept, (type_code, side) in LATERAL_CONCEPTS.items():
        if type_code == code and MODIFIERS[side][0] == modifier:
            return concept
    return code
