"""Names a clinician reads: ``kidney_right`` -> "Right kidney", ``liver`` -> "Liver".

A model's label names are identifiers (snake_case, laterality last); the segments Slicer shows are
named for people. The Train section maps segments back to labels word by word, so both forms match.
"""

from __future__ import annotations

LATERALITY = {"right": "Right", "left": "Left"}


def display_name(label: str) -> str:
    """Human-readable segment name of a model label name."""
    words = [w for w in label.replace("-", "_").split("_") if w]
    if not words:
        return label
    side = [w for w in words if w.lower() in LATERALITY]
    rest = [w for w in words if w.lower() not in LATERALITY]
    if side and rest:
        return " ".join([LATERALITY[side[0].lower()], *(w.lower() for w in rest)])
    text = " ".join(words)
    return text[:1].upper() + text[1:]
