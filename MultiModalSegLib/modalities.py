"""Modality profiles (CT, MR, CBCT): intensity normalisation to [0, 1] and modality detection."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import InputError
from .io import Volume

KINDS = ("window", "percentile")
# Which voxels the percentiles of a "percentile" profile are taken over.
#   "all": every voxel of the image. Air (about 0 in MR) sets the low end and the brightest tissue the
#          high end, so every tissue keeps its own value, organs darker than fat included.
#   "above_mean": the voxels above the image mean (profiles written before "foreground" existed).
#          On a T1-weighted or Dixon in-phase abdomen the bright subcutaneous fat lifts the mean above
#          the liver, spleen and kidneys: all three were clipped to 0, the value of air.
FOREGROUNDS = ("all", "above_mean")
LEGACY_FOREGROUND = "above_mean"  # a profile without the key (a bundle from before it) keeps its behaviour
# A "percentile" profile's optional "log_compression" k > 0 follows the linear scaling u in [0, 1] with
# log(1 + k u) / log(1 + k): 0 and 1 stay where they are and the dark end is stretched. On a
# fat-dominated abdominal MR (a T1-weighted or Dixon fat image) the liver, spleen, kidneys and muscle
# lie within the lowest hundredths of the linear scale, barely above air; with k = 30 the sample MR's
# spleen and kidneys move from about 0.04 to 0.22 and its liver from 0.15 to 0.49 (percentiles of all
# voxels; training/reports/abdomen-synth-v18/synthetic_vs_real_mr.md), while fat stays near 1. The map
# is fixed and monotone, so it keeps the profile's invariance to the scanner's arbitrary units.
# Absent or 0: linear (every older profile).


@dataclass(frozen=True)
class ModalityProfile:
    """How one modality's intensities are mapped to [0, 1] before entering the network.

    ``kind`` is ``"window"`` (clip to ``params["low"]..params["high"]``, scale linearly) or
    ``"percentile"`` (clip to the ``params["low_percentile"]`` and ``params["high_percentile"]``
    percentiles of the voxels chosen by ``params["foreground"]``, scale linearly; see
    :data:`FOREGROUNDS`; then the optional ``params["log_compression"]`` curve, :meth:`compress`).
    """

    name: str
    kind: str
    params: dict = field(default_factory=dict)
    description: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(f"modality {self.name!r}: unknown kind {self.kind!r}; use one of {list(KINDS)}.")
        if self.kind == "percentile" and self.foreground not in FOREGROUNDS:
            raise InputError(
                f"modality {self.name!r}: unknown foreground {self.foreground!r}; use one of {list(FOREGROUNDS)}."
            )
        k = self.params.get("log_compression", 0.0)
        if self.kind != "percentile" and "log_compression" in self.params:
            raise InputError(f"modality {self.name!r}: log_compression applies to percentile profiles only.")
        if isinstance(k, bool) or not isinstance(k, int | float) or not 0.0 <= k <= 1e6:
            raise InputError(f"modality {self.name!r}: log_compression {k!r} must be a number from 0 (linear) to 1e6, e.g. 100.")

    @property
    def foreground(self) -> str:
        """For ``percentile`` profiles: the voxels the percentiles are taken over."""
        return str(self.params.get("foreground", LEGACY_FOREGROUND))

    @property
    def log_compression(self) -> float:
        """``k`` of the curve :meth:`compress` (0: none)."""
        return float(self.params.get("log_compression", 0.0))

    def normalize(self, array: np.ndarray) -> np.ndarray:
        """Intensities scaled to float32 in [0, 1]; background maps to about 0."""
        data = np.asarray(array, dtype=np.float32)
        return self.compress(scale_to_unit(data, *self.bounds(data)))

    def compress(self, unit: np.ndarray) -> np.ndarray:
        """The profile's curve on linearly scaled values in [0, 1] (in place for float32 arrays):
        ``log(1 + k u) / log(1 + k)`` with ``k`` = :attr:`log_compression`; unchanged when ``k`` is 0."""
        k = self.log_compression
        if k == 0.0:
            return unit
        out = np.asarray(unit, dtype=np.float32)
        out *= np.float32(k)
        np.log1p(out, out=out)
        out /= np.float32(np.log1p(k))
        return np.clip(out, 0.0, 1.0, out=out)

    def bounds(self, array: np.ndarray) -> tuple[float, float]:
        """The intensities that :meth:`normalize` maps to 0 and 1 for ``array``."""
        if self.kind == "window":
            return float(self.params["low"]), float(self.params["high"])
        return _foreground_percentiles(
            np.asarray(array, dtype=np.float32), float(self.params["low_percentile"]), float(self.params["high_percentile"]),
            self.foreground,
        )

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "params": dict(self.params),
            "description": self.description,
        }

    @classmethod
    def from_dict(cls, d: dict) -> ModalityProfile:
        return cls(str(d["name"]), str(d["kind"]), dict(d.get("params", {})), str(d.get("description", "")))


def with_params(profile: ModalityProfile, overrides: dict) -> ModalityProfile:
    """``profile`` with some of its parameters replaced (a recipe that pins the profile it was trained
    with, e.g. ``{"foreground": "above_mean"}``); the description says so. Unknown keys are refused."""
    settable = set(profile.params) | ({"foreground", "log_compression"} if profile.kind == "percentile" else set())
    unknown = sorted(set(overrides) - settable)
    if unknown:
        raise InputError(f"modality {profile.name!r}: cannot set {unknown}; its parameters are {sorted(settable)}.")
    if not overrides:
        return profile
    params = {**profile.params, **overrides}
    described = _percentile_description(profile.name, params) if profile.kind == "percentile" else profile.description
    return ModalityProfile(profile.name, profile.kind, params, f"{described} Pinned by the recipe: {overrides}.")


def _percentile_description(name: str, params: dict) -> str:
    """What a percentile profile with ``params`` does, in one sentence (a pinned profile's own words, not
    the library profile's it replaced)."""
    which = "the voxels above the image mean" if params.get("foreground") == "above_mean" else "all voxels"
    c = params.get("log_compression")
    curve = f", then log(1 + {c:g} u) / log(1 + {c:g})" if c else ""
    return f"{name}, arbitrary units: {params['low_percentile']:g}-{params['high_percentile']:g} percentiles of {which}{curve}."


def recorded_profiles(metadata: dict) -> dict[str, ModalityProfile]:
    """The intensity profiles a bundle's ``metadata`` records, by modality (those it was trained with)."""
    return {name: ModalityProfile.from_dict(p) for name, p in metadata["modalities"].items()}


def _foreground_percentiles(
    data: np.ndarray, low_pct: float, high_pct: float, foreground: str = "all"
) -> tuple[float, float]:
    """Percentiles of the voxels named by ``foreground`` (all voxels when none are above the mean)."""
    if data.size == 0:
        return 0.0, 0.0
    voxels = data[data > data.mean()] if foreground == "above_mean" else data.ravel()
    low, high = np.percentile(voxels if voxels.size else data.ravel(), [low_pct, high_pct])
    return float(low), float(high)


def scale_to_unit(data: np.ndarray, low: float, high: float) -> np.ndarray:
    """Clip to [low, high] and map linearly to [0, 1]; a zero-width range gives all zeros."""
    if not high > low:
        return np.zeros(data.shape, dtype=np.float32)
    # One float32 buffer, operated on in place: a 512 x 512 x 133 CT costs one allocation, not four.
    out = np.clip(data, low, high, out=np.empty(data.shape, dtype=np.float32))
    out -= np.float32(low)
    out /= np.float32(high - low)
    return np.clip(out, 0.0, 1.0, out=out)  # float32 rounding can step one ulp past either end


CT = ModalityProfile(
    "CT", "window", {"low": -200.0, "high": 300.0}, "CT in Hounsfield units: abdominal window [-200, 300] HU."
)
MR = ModalityProfile(
    "MR",
    "percentile",
    {"low_percentile": 0.5, "high_percentile": 99.5, "foreground": "all"},
    "MR, arbitrary units: 0.5-99.5 percentiles of all voxels (air to the brightest tissue).",
)

# Cone-beam CT (e.g. the on-board imager of a radiotherapy linac): reconstructed in Hounsfield units
# but only roughly calibrated (scatter, cupping, streaks, a narrow field of view). Choice: the same
# abdominal window as CT, [-200, 300] HU, rather than percentiles: the values stay HU-like, so a
# CBCT branch initialised from a CT model sees inputs on the scale that model was trained on; the
# remaining calibration offsets (tens of HU) are left to the network and its fine-tuning.
CBCT = ModalityProfile(
    "CBCT",
    "window",
    {"low": -200.0, "high": 300.0},
    "Cone-beam CT in (roughly calibrated) Hounsfield units: the CT abdominal window [-200, 300] HU.",
)

MODALITIES: dict[str, ModalityProfile] = {CT.name: CT, MR.name: MR, CBCT.name: CBCT}


def register_modality(profile: ModalityProfile, *, replace: bool = False) -> ModalityProfile:
    """Add a profile to ``MODALITIES``; an existing different profile of that name needs ``replace``."""
    existing = _find(profile.name)
    if existing is not None and existing != profile and not replace:
        raise InputError(f"modality {profile.name!r} is already registered; pass replace=True to change it.")
    if existing is not None:
        del MODALITIES[existing.name]
    MODALITIES[profile.name] = profile
    return profile


def _find(name: str) -> ModalityProfile | None:
    key = name.strip().casefold()
    return next((p for n, p in MODALITIES.items() if n.casefold() == key), None)


def modality_names() -> list[str]:
    return list(MODALITIES)


def get_modality(name: str) -> ModalityProfile:
    """The registered profile called ``name`` (case-insensitive)."""
    profile = _find(name)
    if profile is None:
        raise InputError(
            f"unknown modality {name!r}; use one of {modality_names()} or --modality auto to detect it."
        )
    return profile


# DICOM Modality (0008,0060) values -> registered profile names.
DICOM_MODALITY_MAP = {"CT": "CT", "MR": "MR"}
# The modalities detection tells apart: a given modality among them can be contradicted by it
# (a CBCT looks like a CT, so detection says nothing about a given CBCT).
DETECTABLE_MODALITIES = ("CT", "MR")

# Intensity heuristic thresholds.
AIR_HU = -500.0
FAT_HU = -50.0
MIN_AIR_FRACTION = 0.02
MIN_FAT_FRACTION = 0.05


DETECTION_VOXELS = 2_000_000  # the intensity heuristic reads at most about this many voxels


def _detection_sample(data: np.ndarray) -> np.ndarray:
    """Every k-th voxel along each axis (a view), k the smallest step leaving at most about
    :data:`DETECTION_VOXELS`: the fractions and percentile the heuristic reads barely change (a
    512 x 512 x 300 CT is read through 1 voxel in 64), and a large scan is judged in milliseconds."""
    step = 1
    while data.size / step**data.ndim > DETECTION_VOXELS:
        step += 1
    return data[(slice(None, None, step),) * data.ndim] if step > 1 else data


def detect_modality_reason(volume: Volume) -> tuple[str, str]:
    """The modality of ``volume`` and a one-line reason.

    1. A DICOM Modality tag that maps to a registered profile ("CT" -> CT, "MR" -> MR) decides.
    2. Otherwise intensities decide. CT in Hounsfield units has air around -1000 HU and fat around
       -100 HU, so a CT has many strongly negative voxels: it is called CT when at least 2 % of the
       voxels are below -500 (air), or at least 5 % are below -50 (fat, for scans cropped to the
       body). MR is in arbitrary units and non-negative or nearly so (small negative values from
       reconstruction or bias correction), so everything else is called MR. A large volume is read
       through a regular subsample (see :func:`_detection_sample`).
    """
    tag = (volume.modality_tag or "").strip().upper()
    if tag in DICOM_MODALITY_MAP and _find(DICOM_MODALITY_MAP[tag]) is not None:
        return DICOM_MODALITY_MAP[tag], f"DICOM Modality tag is {tag}"
    note = f"DICOM Modality tag {tag} is not CT or MR; " if tag else ""
    data = _detection_sample(np.asarray(volume.array))
    if not np.issubdtype(data.dtype, np.integer):  # integer voxels are all finite: no float copy
        data = np.asarray(data, dtype=np.float32)
        data = data[np.isfinite(data)]
    if data.size == 0:
        return "MR", note + "no finite voxels; assumed MR"
    air, fat = float(np.mean(data < AIR_HU)), float(np.mean(data < FAT_HU))
    p1 = float(np.percentile(data, 1))
    if air >= MIN_AIR_FRACTION:
        return "CT", note + f"{air:.0%} of voxels below {AIR_HU:g} (air in HU), 1st percentile {p1:.0f}"
    if fat >= MIN_FAT_FRACTION:
        return "CT", note + f"{fat:.0%} of voxels below {FAT_HU:g} (fat in HU), 1st percentile {p1:.0f}"
    return (
        "MR",
        note + f"intensities non-negative or nearly so (1st percentile {p1:.0f}, {fat:.1%} below {FAT_HU:g})",
    )


def detect_modality(volume: Volume) -> str:
    """The modality of ``volume``: its DICOM tag when known, else an intensity heuristic.

    See ``detect_modality_reason`` for the heuristic.
    """
    return detect_modality_reason(volume)[0]
