"""Tissue classes of the structures of a label map, and their intensities per contrast.

Used by :mod:`.synthesis` to draw training images from label maps. Structures are named by the
ids of TotalSegmentator's "total" task (the label maps of the shipped real scans); voxels a label
map leaves unlabelled get a class from their intensity (:func:`intensity_classes`), ids from
:data:`UNLABELLED_BASE` on.

Values are typical figures from the radiology literature, rounded: CT in Hounsfield units (native
and portal-venous phase), MR as relative signal in [0, 1] for each weighting. They only centre the
random draws; the synthesiser spreads every structure's mean and width around them.
"""

from __future__ import annotations

import numpy as np

# tissue class -> (native CT HU mean, HU spread, extra HU in the portal-venous phase)
CT_HU: dict[str, tuple[float, float, float]] = {
    "air": (-1000.0, 15.0, 0.0),
    "lung": (-850.0, 60.0, 0.0),
    "fat": (-100.0, 20.0, 0.0),
    "muscle": (50.0, 15.0, 10.0),
    "liver": (60.0, 12.0, 50.0),
    "spleen": (50.0, 12.0, 70.0),
    "kidney": (35.0, 12.0, 120.0),
    "bowel": (30.0, 35.0, 20.0),
    "fluid": (8.0, 8.0, 0.0),
    "gland": (40.0, 15.0, 50.0),
    "vessel": (45.0, 12.0, 150.0),
    "bone": (450.0, 200.0, 0.0),
    "cartilage": (120.0, 40.0, 0.0),
    "cord": (35.0, 10.0, 0.0),
    "heart": (45.0, 15.0, 130.0),
    "soft": (30.0, 30.0, 15.0),
    "dense": (300.0, 150.0, 0.0),
}

# Arterial (late arterial / corticomedullary) phase, about 30-40 s after an iodine bolus: HU added to
# a tissue's native value, drawn uniformly in (low, high). The aorta and the heart's chambers are
# brightest, the renal cortex and the spleen (often mottled) enhance strongly, the liver, fed mostly by
# the portal vein, only a little; so the organs' order differs from the portal-venous phase's.
CT_ARTERIAL_GAIN: dict[str, tuple[float, float]] = {
    "air": (0.0, 0.0), "lung": (0.0, 0.0), "fat": (0.0, 0.0), "muscle": (0.0, 20.0),
    "liver": (0.0, 35.0), "spleen": (50.0, 170.0), "kidney": (80.0, 240.0), "bowel": (10.0, 60.0),
    "fluid": (0.0, 0.0), "gland": (30.0, 110.0), "vessel": (150.0, 380.0), "bone": (0.0, 0.0),
    "cartilage": (0.0, 0.0), "cord": (0.0, 10.0), "heart": (100.0, 330.0), "soft": (0.0, 30.0),
    "dense": (0.0, 0.0),
}

# MR weightings: tissue class -> relative signal. "T1c" is a T1 in the portal-venous phase after
# gadolinium; the four Dixon images are water, fat, in-phase and opposed-phase.
MR_SIGNAL: dict[str, dict[str, float]] = {
    "T1": {"air": 0.0, "lung": 0.03, "fat": 0.9, "muscle": 0.35, "liver": 0.5, "spleen": 0.38, "kidney": 0.4,
           "bowel": 0.35, "fluid": 0.12, "gland": 0.45, "vessel": 0.15, "bone": 0.55, "cartilage": 0.3,
           "cord": 0.4, "heart": 0.35, "soft": 0.4, "dense": 0.25},
    "T1c": {"air": 0.0, "lung": 0.03, "fat": 0.8, "muscle": 0.4, "liver": 0.62, "spleen": 0.6, "kidney": 0.75,
            "bowel": 0.45, "fluid": 0.12, "gland": 0.6, "vessel": 0.85, "bone": 0.55, "cartilage": 0.35,
            "cord": 0.4, "heart": 0.75, "soft": 0.45, "dense": 0.25},
    "T2": {"air": 0.0, "lung": 0.03, "fat": 0.65, "muscle": 0.2, "liver": 0.25, "spleen": 0.55, "kidney": 0.6,
           "bowel": 0.45, "fluid": 1.0, "gland": 0.45, "vessel": 0.08, "bone": 0.35, "cartilage": 0.3,
           "cord": 0.5, "heart": 0.3, "soft": 0.4, "dense": 0.15},
    "water": {"air": 0.0, "lung": 0.03, "fat": 0.08, "muscle": 0.4, "liver": 0.5, "spleen": 0.45, "kidney": 0.5,
              "bowel": 0.4, "fluid": 0.25, "gland": 0.45, "vessel": 0.3, "bone": 0.3, "cartilage": 0.35,
              "cord": 0.4, "heart": 0.4, "soft": 0.45, "dense": 0.2},
    "fat": {"air": 0.0, "lung": 0.01, "fat": 0.95, "muscle": 0.08, "liver": 0.1, "spleen": 0.05, "kidney": 0.05,
            "bowel": 0.08, "fluid": 0.03, "gland": 0.12, "vessel": 0.03, "bone": 0.6, "cartilage": 0.1,
            "cord": 0.05, "heart": 0.05, "soft": 0.3, "dense": 0.3},
    "in_phase": {"air": 0.0, "lung": 0.03, "fat": 0.85, "muscle": 0.35, "liver": 0.5, "spleen": 0.4, "kidney": 0.45,
                 "bowel": 0.38, "fluid": 0.15, "gland": 0.45, "vessel": 0.2, "bone": 0.55, "cartilage": 0.3,
                 "cord": 0.4, "heart": 0.38, "soft": 0.45, "dense": 0.3},
    "opposed_phase": {"air": 0.0, "lung": 0.03, "fat": 0.75, "muscle": 0.33, "liver": 0.45, "spleen": 0.4,
                      "kidney": 0.42, "bowel": 0.3, "fluid": 0.15, "gland": 0.3, "vessel": 0.2, "bone": 0.3,
                      "cartilage": 0.25, "cord": 0.4, "heart": 0.36, "soft": 0.3, "dense": 0.25},
}

TISSUE_CLASSES = tuple(CT_HU)

# TotalSegmentator "total" ids -> tissue class (ids not listed are "soft").
_GROUPS: dict[str, tuple[int, ...]] = {
    "spleen": (1,),
    "kidney": (2, 3),
    "fluid": (4, 21, 23, 24),
    "liver": (5,),
    "bowel": (6, 15, 18, 19, 20),
    "gland": (7, 8, 9, 17, 22),
    "lung": (10, 11, 12, 13, 14),
    "air": (16,),
    "bone": (*range(25, 51), *range(69, 79), 91, *range(92, 117)),
    "heart": (51, 61),
    "vessel": tuple(range(52, 69)),
    "cord": (79,),
    "muscle": tuple(range(80, 90)),
    "soft": (90, 117),
    "cartilage": (118,),
}
TOTALSEG_TISSUE: dict[int, str] = {i: group for group, ids in _GROUPS.items() for i in ids}

# Unlabelled voxels: ids UNLABELLED_BASE + k for the classes below, by intensity.
UNLABELLED_BASE = 200
UNLABELLED_CLASSES = ("air", "fat", "soft", "dense")
CT_BINS_HU = (-500.0, -30.0, 150.0)  # air | fat | soft tissue | bone, calcium or contrast


# Organ name -> its id in TotalSegmentator's "total" task, for the organs a model may label.
TOTALSEG_IDS: dict[str, int] = {"spleen": 1, "kidney_right": 2, "kidney_left": 3, "gallbladder": 4, "liver": 5,
                                "stomach": 6, "pancreas": 7}
OTHER_LABELS_BASE = 120  # generation ids of model labels TOTALSEG_IDS does not name: 120 + value ("soft")


def generation_ids(labels) -> dict[int, int]:
    """Model label value -> generation id, for labels with ``name`` and ``value`` (a
    :class:`~MultiModalSegLib.labels.LabelInfo`): the organ's TotalSegmentator id when it has one,
    else an id of its own that draws as soft tissue."""
    return {int(lab.value): TOTALSEG_IDS.get(lab.name, OTHER_LABELS_BASE + int(lab.value)) for lab in labels}


def tissue_of(structure_id: int) -> str:
    """The tissue class of a generation id (a TotalSegmentator id, or an unlabelled-intensity class)."""
    if structure_id == 0:
        return "air"
    if structure_id >= UNLABELLED_BASE:
        return UNLABELLED_CLASSES[min(structure_id - UNLABELLED_BASE, len(UNLABELLED_CLASSES) - 1)]
    return TOTALSEG_TISSUE.get(int(structure_id), "soft")


def intensity_classes(image: np.ndarray, unlabelled: np.ndarray, modality: str) -> np.ndarray:
    """Generation ids (uint8) for the ``unlabelled`` voxels of ``image``: four intensity classes.

    CT: fixed HU bins (air below -500, fat below -30, soft tissue below 150, dense above). Other
    modalities (arbitrary units): the quartiles of the unlabelled voxels, darkest first.
    """
    values = np.asarray(image, dtype=np.float32)
    if modality.upper() in ("CT", "CBCT"):
        edges = np.asarray(CT_BINS_HU, dtype=np.float32)
    else:
        sample = values[unlabelled]
        edges = np.percentile(sample, [25, 50, 75]).astype(np.float32) if sample.size else np.zeros(3, np.float32)
    classes = np.digitize(values, edges).astype(np.uint8) + np.uint8(UNLABELLED_BASE)
    return np.where(unlabelled, classes, 0).astype(np.uint8)
