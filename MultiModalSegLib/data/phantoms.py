"""Seeded synthetic abdominal CT, MR and cone-beam CT phantoms with liver, spleen and kidney label maps.

The anatomy of a phantom depends only on ``seed`` (the "patient"); the acquisition (field of
view, spacing, stored orientation, contrast phase, noise, bias field) depends on the seed and the
modality. :func:`write_phantom_dataset` draws different patients for CT and MR (and for the
optional extra modalities, e.g. CBCT), so the dataset is unpaired. Everything is built in LPS physical millimetres (+x patient left, +y posterior,
+z superior) from implicit shapes (ellipsoids and superellipsoids), bent by a smooth random
displacement field, then sampled on the image grid.

``thorax=True`` adds what lies above and around the upper abdomen of a real chest-abdomen scan:
the diaphragm's two domes over the liver and the spleen, the lung bases above them (reaching down
behind and beside the organs' upper poles, as the costophrenic recesses do), the heart on the
central part of the diaphragm and the lower ribs in the body wall; the field of view may then
reach up to 14 cm above the domes. Without it, every phantom is exactly as before. A data set may
give the thorax to the phantoms of some modalities only (``thorax=["CT"]``).

``anatomy=2`` widens the organs' shapes beyond the roughly 15 % size jitter of the first anatomy
(``anatomy=1``, every phantom exactly as before): the spleen from about half to twice its volume,
longer along the body wall and, in most patients, crescent-shaped (its visceral face hollowed where
the stomach and the kidney press on it); the liver's left lobe from a small tongue to a lobe that
reaches across the midline towards the spleen; the right lobe and the kidneys somewhat larger or
smaller. The extra draws come from a stream of their own, so a patient keeps its layout (positions,
body, bowel, vessels) under either anatomy. A data set may give the wider shapes to the phantoms of
some modalities only (``anatomy={"CT": 2}``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..atomic import write_text_atomic
from ..errors import InputError
from ..io import Volume, write_image_atomic, write_labelmap
from ..labels import ABDOMEN_LABELS

MODALITIES = ("CT", "MR", "CBCT")  # a modality's index seeds its acquisitions: append, never reorder
EXTRA_MODALITIES = MODALITIES[2:]  # written by write_phantom_dataset(..., extra={name: count})
LPS_DIRECTION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
RAS_DIRECTION = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)

# Tissue classes of the internal tissue map (index into the intensity tables).
TISSUES = (
    "air", "fat", "muscle", "visceral_fat", "bowel", "gas", "marrow", "cortical_bone",
    "disc", "csf", "aorta", "vein", "liver", "spleen", "kidney", "lung", "heart",
)  # fmt: skip  (append only: a tissue's index is its id in the tissue map)
T = {name: i for i, name in enumerate(TISSUES)}
# The tissues every phantom has; the thorax's come after them. Per-tissue random draws are made for
# these only (the thorax's tissues take their table values), so that a phantom without a thorax
# draws exactly the numbers it drew before the thorax existed.
ABDOMEN_TISSUES = T["lung"]
LABEL = {lab.name: lab.value for lab in ABDOMEN_LABELS}

# Tissue -> (native value, contrast-enhanced value, texture amplitude), Hounsfield units.
CT_TABLE = {
    "air": (-1000, -1000, 0), "fat": (-100, -100, 8), "muscle": (45, 50, 6),
    "visceral_fat": (-90, -90, 12), "bowel": (30, 45, 15), "gas": (-900, -900, 30),
    "marrow": (320, 320, 40), "cortical_bone": (800, 800, 60), "disc": (80, 85, 8),
    "csf": (10, 10, 4), "aorta": (40, 200, 6), "vein": (40, 150, 6), "liver": (60, 110, 6),
    "spleen": (50, 120, 6), "kidney": (35, 170, 10), "lung": (-850, -850, 35), "heart": (40, 170, 8),
}  # fmt: skip
# Tissue -> (T2-weighted-like signal on a 0-1000 scale, relative texture amplitude).
MR_TABLE = {
    "air": (0, 0), "fat": (720, 0.04), "muscle": (140, 0.06), "visceral_fat": (650, 0.06),
    "bowel": (380, 0.2), "gas": (0, 0), "marrow": (420, 0.08), "cortical_bone": (30, 0.1),
    "disc": (520, 0.05), "csf": (900, 0.03), "aorta": (40, 0.3), "vein": (90, 0.3), "liver": (260, 0.05),
    "spleen": (560, 0.05), "kidney": (620, 0.06), "lung": (25, 0.4), "heart": (330, 0.15),
}  # fmt: skip

MAX_INPLANE = 220
MAX_SLICES = 130
# Anatomy-fixed control grids (physical mm): start, step and count per axis (x, y, z).
_DEFORM_GRID = ((-330.0, 70.0, 11), (-330.0, 70.0, 11), (-450.0, 70.0, 14))
_BOWEL_GRID = ((-300.0, 25.0, 25), (-300.0, 25.0, 25), (-400.0, 25.0, 34))


@dataclass(frozen=True)
class Ellipsoid:
    """Superellipsoid ``sum |local_i / axes_i| ** power <= 1``; ``local = rotation.T @ (p - center)``."""

    center: np.ndarray
    axes: np.ndarray
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))
    power: float = 2.0

    def bounds(self, margin: float) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned physical box holding the shape, grown by ``margin`` mm."""
        half = np.sqrt(((self.rotation * self.axes[None, :]) ** 2).sum(axis=1))
        if self.power > 2.0:
            half = half * 3 ** (0.5 - 1 / self.power)
        return self.center - half - margin, self.center + half + margin


@dataclass(frozen=True)
class Thorax:
    """The chest above one patient's abdomen (physical mm; see the module docstring).

    The diaphragm is the upper envelope of two paraboloid domes, right (over the liver) then left
    (over the spleen), each ``(x, y, peak z, x radius, y radius, depth)``: at ``r**2 =
    ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2`` it lies ``depth * min(r**2, 2.2)`` below its peak.
    """

    domes: tuple[tuple[float, float, float, float, float, float], ...]
    diaphragm: float  # muscle thickness, mm
    heart: Ellipsoid
    rib_period: float  # cranio-caudal spacing of the ribs, mm
    rib_width: float
    rib_slope: float  # a rib rises this many mm per mm towards the back
    rib_phase: float
    rib_floor: float  # no rib below this height (about the 12th rib)
    scan_above: float  # the field of view may reach this far above the higher dome's peak

    def diaphragm_height(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Height (mm) of the diaphragm's lower surface above each (x, y)."""
        out = None
        for cx, cy, peak, rx, ry, depth in self.domes:
            r2 = np.minimum(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2, 2.2)
            height = peak - depth * r2
            out = height if out is None else np.maximum(out, height)
        return out

    @property
    def top(self) -> float:
        return max(d[2] for d in self.domes)


@dataclass
class Anatomy:
    """One patient's body outline and organ shapes (physical mm)."""

    body_axes: tuple[float, float, float]  # half-width, anterior and posterior half-depth
    body_wobble: tuple[float, float, float]  # relative amplitude, period (mm), phase
    fat: float
    muscle: float
    spine_y: float
    vertebral_radius: float
    vertebra_phase: float
    aorta: tuple[float, float, float]  # x, y, radius
    vein: tuple[float, float, float]  # inferior vena cava: x, y, radius
    organs: dict[str, list[tuple[Ellipsoid, bool]]]  # organ -> (shape, adds) in paint order
    gas: list[Ellipsoid]
    deform: np.ndarray  # (3, nz, ny, nx) control values of the displacement, mm
    bowel: np.ndarray  # control values of the bowel-loop field
    thorax: Thorax | None = None  # lung bases, diaphragm, heart and ribs (phantoms drawn with thorax=True)


@dataclass
class Acquisition:
    """Scanner-side parameters of one phantom image."""

    xs: np.ndarray  # ascending physical coordinates of the grid (LPS order), mm
    ys: np.ndarray
    zs: np.ndarray
    direction: tuple[float, ...]
    contrast: bool
    rng: np.random.Generator


# ---------------------------------------------------------------------------- geometry helpers


def _rotation(rx: float, ry: float, rz: float) -> np.ndarray:
    """Rotation matrix from angles in degrees about x, then y, then z."""
    ax, ay, az = np.deg2rad([rx, ry, rz])
    mx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    my = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    mz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return mz @ my @ mx


def _bspline(u: np.ndarray) -> np.ndarray:
    a = np.abs(u)
    return np.where(a < 1, 2 / 3 - a**2 + a**3 / 2, np.where(a < 2, (2 - a) ** 3 / 6, 0.0))


def _weights(coords: np.ndarray, start: float, step: float, count: int) -> np.ndarray:
    """Cubic B-spline interpolation matrix (len(coords), count) from a control grid to coords."""
    t = (coords - start) / step
    return _bspline(t[:, None] - np.arange(count)[None, :]).astype(np.float32)


def _upsample(control: np.ndarray, wz: np.ndarray, wy: np.ndarray, wx: np.ndarray) -> np.ndarray:
    """Separable B-spline evaluation of a (cz, cy, cx) control grid on the (nz, ny, nx) grid."""
    a = control.astype(np.float32) @ wx.T  # (cz, cy, nx)
    a = wy @ a  # (cz, ny, nx)
    cz, ny, nx = a.shape
    return (wz @ a.reshape(cz, ny * nx)).reshape(len(wz), ny, nx)


def _grid_weights(acq: Acquisition, grid: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    (x0, dx, cx), (y0, dy, cy), (z0, dz, cz) = grid
    return _weights(acq.zs, z0, dz, cz), _weights(acq.ys, y0, dy, cy), _weights(acq.xs, x0, dx, cx)


def _box(acq: Acquisition, lo: np.ndarray, hi: np.ndarray) -> tuple[slice, slice, slice] | None:
    """Index slices (z, y, x) of the grid points inside the physical box, or None if empty."""
    out = []
    for coords, a, b in ((acq.zs, lo[2], hi[2]), (acq.ys, lo[1], hi[1]), (acq.xs, lo[0], hi[0])):
        i0, i1 = np.searchsorted(coords, a), np.searchsorted(coords, b, side="right")
        if i1 <= i0:
            return None
        out.append(slice(int(i0), int(i1)))
    return tuple(out)


def _inside(shape: Ellipsoid, pts: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    d = [p - c for p, c in zip(pts, shape.center, strict=True)]
    f = np.zeros(d[0].shape, np.float32)
    for i in range(3):
        r = shape.rotation
        local = (r[0, i] * d[0] + r[1, i] * d[1] + r[2, i] * d[2]) / shape.axes[i]
        f += local * local if shape.power == 2.0 else np.abs(local) ** shape.power
    return f <= 1.0


# ---------------------------------------------------------------------------- anatomy sampling


def _jitter(rng: np.random.Generator, sigma: float, limit: float, n: int = 3) -> np.ndarray:
    return np.clip(rng.normal(0.0, sigma, n), -limit, limit)


def _organ_axes(rng: np.random.Generator, base: tuple[float, float, float]) -> np.ndarray:
    """Organ semi-axes scaled by about +-15 % (a global factor times a per-axis one)."""
    return np.asarray(base) * rng.uniform(0.92, 1.08) * rng.uniform(0.93, 1.07, 3)


def _shape(rng, center, base_axes, angles=(0.0, 0.0, 0.0), power=2.0) -> Ellipsoid:
    center = np.asarray(center, float) + _jitter(rng, 7.0, 15.0)
    rot = _rotation(*(np.asarray(angles) + _jitter(rng, 3.0, 6.0)))
    return Ellipsoid(center, _organ_axes(rng, base_axes), rot, power)


def _wall_angle(x: float, y: float, ax: float, ay: float) -> float:
    """Angle (degrees, about z) of the outward normal of the body ellipse near (x, y)."""
    return float(np.degrees(np.arctan2(y / ay**2, x / ax**2)))


def _liver(rng, cav_x: float, cav_y: float) -> list[tuple[Ellipsoid, bool]]:
    right = _shape(rng, (-0.5 * cav_x, -0.05 * cav_y, 40.0), (66.0, 70.0, 70.0), (0, 0, -10), 2.4)
    left = _shape(rng, (0.12 * cav_x, -0.5 * cav_y, 55.0), (62.0, 28.0, 42.0), (0, 12, 15))
    return [(right, True), (left, True)]


def _spleen(rng, cav_x: float, cav_back: float) -> list[tuple[Ellipsoid, bool]]:
    """Spleen against the posterolateral left wall, its thin axis along the wall's normal."""
    theta = np.deg2rad(rng.uniform(30, 48))
    wx, wy = cav_x * np.cos(theta), cav_back * np.sin(theta)
    angle = _wall_angle(wx, wy, cav_x, cav_back)
    inward = 21.0 + 14.0
    center = (wx - inward * np.cos(np.deg2rad(angle)), wy - inward * np.sin(np.deg2rad(angle)), 66.0)
    return [(_shape(rng, center, (21.0, 52.0, 46.0), (0, 0, angle)), True)]


def _kidney(rng, side: float, x: float, y: float, z: float) -> list[tuple[Ellipsoid, bool]]:
    """Bean-shaped kidney: an ellipsoid with a medial-anterior hilum notch (renal sinus)."""
    outer = _shape(rng, (side * x, y, z), (29.0, 26.0, 56.5), (0, side * 12, side * -30))
    notch_center = outer.center + outer.rotation @ np.array([-side * 0.85 * outer.axes[0], 0, 0])
    notch = Ellipsoid(notch_center, outer.axes * (0.5, 0.5, 0.4), outer.rotation)
    return [(outer, True), (notch, False)]


def _gas_pockets(rng, cav_x: float, cav_y: float) -> list[Ellipsoid]:
    pockets = []
    for _ in range(int(rng.integers(4, 11))):
        center = (rng.uniform(-0.6, 0.6) * cav_x, rng.uniform(-0.85, -0.2) * cav_y, rng.uniform(-120, 100))
        axes = rng.uniform(6.0, 18.0) * rng.uniform(0.7, 1.3, 3)
        pockets.append(Ellipsoid(np.asarray(center), axes, _rotation(*rng.uniform(-90, 90, 3))))
    return pockets


def _control(rng, grid: tuple, sigma: float) -> np.ndarray:
    return rng.normal(0.0, sigma, (grid[2][2], grid[1][2], grid[0][2]))


def _cavity_axes(body_axes: tuple[float, float, float], fat: float, muscle: float) -> tuple[float, float, float]:
    """Half-width, anterior and posterior half-depth of the abdominal cavity (inside the muscle wall)."""
    ax, ay_ant, ay_post = body_axes
    return ax - fat - muscle, ay_ant - fat - muscle, ay_post - 0.4 * fat - muscle


def _sample_anatomy(rng: np.random.Generator) -> Anatomy:
    ax, ay_ant, ay_post = rng.uniform(140, 185), rng.uniform(100, 130), rng.uniform(100, 125)
    fat, muscle = rng.uniform(8, 32), rng.uniform(8, 14)
    cav_x, cav_y, cav_back = _cavity_axes((ax, ay_ant, ay_post), fat, muscle)
    spine_y, vr = ay_post - rng.uniform(68, 78), rng.uniform(17, 22)
    kid_x = min(vr + rng.uniform(52, 60), 0.85 * cav_x - 32)
    kid_y = spine_y + rng.uniform(-6, 4)
    organs = {
        "liver": _liver(rng, cav_x, cav_y),
        "spleen": _spleen(rng, cav_x, cav_back),
        "kidney_right": _kidney(rng, -1.0, kid_x, kid_y, rng.uniform(-25, -15)),
        "kidney_left": _kidney(rng, 1.0, kid_x, kid_y, rng.uniform(-8, 2)),
    }
    radius = rng.uniform(10, 13)
    return Anatomy(
        body_axes=(ax, ay_ant, ay_post),
        body_wobble=(rng.uniform(0.02, 0.06), rng.uniform(250, 500), rng.uniform(0, 2 * np.pi)),
        fat=fat,
        muscle=muscle,
        spine_y=spine_y,
        vertebral_radius=vr,
        vertebra_phase=rng.uniform(0, 36),
        aorta=(rng.uniform(8, 16), spine_y - vr - radius - rng.uniform(1, 4), radius),
        vein=(-rng.uniform(18, 26), spine_y - vr - rng.uniform(12, 20), rng.uniform(9, 12)),
        organs=organs,
        gas=_gas_pockets(rng, cav_x, cav_y),
        deform=np.stack([_control(rng, _DEFORM_GRID, rng.uniform(6, 12)) for _ in range(3)]),
        bowel=_control(rng, _BOWEL_GRID, 1.0),
    )


def _scaled(shape: Ellipsoid, factors, shift=(0.0, 0.0, 0.0)) -> Ellipsoid:
    """``shape`` with its semi-axes times ``factors`` and its centre moved by ``shift`` (mm)."""
    return Ellipsoid(shape.center + np.asarray(shift, float), shape.axes * np.asarray(factors, float), shape.rotation, shape.power)


def _widen_organs(rng: np.random.Generator, anat: Anatomy) -> None:
    """The second anatomy (``anatomy=2``): organ shapes drawn wider than the first's (module docstring).

    Spleen: semi-axes times 0.8-1.3 (thin axis, along the wall 0.85-1.5, height 0.85-1.3), and in 70 %
    of patients a hollow visceral face: an ellipsoid carved from the spleen's inner side (the side
    away from the body wall) to a depth of 0.5-1.3 of its thin semi-axis, leaving a crescent in
    axial section. Liver: the right lobe's semi-axes times 0.88-1.15; the left lobe's width times
    0.6-1.9, grown or shrunk from its right end (so a large one reaches across the midline towards
    the spleen), its depth times 0.8-1.35 and height 0.8-1.25. Kidneys: semi-axes times 0.88-1.12
    (their notch follows).
    """
    (right, _), (left, _) = anat.organs["liver"]
    right = _scaled(right, rng.uniform(0.88, 1.15, 3))
    grow = rng.uniform(0.6, 1.9)
    left = _scaled(left, (grow, rng.uniform(0.8, 1.35), rng.uniform(0.8, 1.25)), ((grow - 1.0) * left.axes[0], 0.0, 0.0))
    anat.organs["liver"] = [(right, True), (left, True)]

    (spleen, _), = anat.organs["spleen"]
    spleen = _scaled(spleen, (rng.uniform(0.8, 1.3), rng.uniform(0.85, 1.5), rng.uniform(0.85, 1.3)))
    parts = [(spleen, True)]
    hollow, depth = rng.random() < 0.7, rng.uniform(0.5, 1.3)
    sizes = np.array([rng.uniform(0.8, 1.1), rng.uniform(0.45, 0.7), rng.uniform(0.6, 0.9)])
    if hollow:  # local x is the thin axis along the wall's outward normal: carve the inner (-x) face
        reach = (1.0 + sizes[0] - depth) * spleen.axes[0]  # the carving reaches ``depth`` semi-axes into the spleen
        center = spleen.center + spleen.rotation @ np.array([-reach, 0.0, 0.0])
        parts.append((Ellipsoid(center, spleen.axes * sizes, spleen.rotation), False))
    anat.organs["spleen"] = parts

    for name in ("kidney_right", "kidney_left"):
        (outer, _), (notch, _) = anat.organs[name]
        factors = rng.uniform(0.88, 1.12, 3)  # the notch sits on the local x axis: its offset scales with x
        outer, notch = _scaled(outer, factors), _scaled(notch, factors, (factors[0] - 1.0) * (notch.center - outer.center))
        anat.organs[name] = [(outer, True), (notch, False)]


def _sample_thorax(rng: np.random.Generator, anat: Anatomy) -> Thorax:
    """Domes whose peaks lie at the upper poles of the liver's right lobe and of the spleen (a few mm
    above or into them), so that the lung bases touch the organs' tops as on a real scan."""
    cav_x, cav_y, cav_back = _cavity_axes(anat.body_axes, anat.fat, anat.muscle)
    domes = []
    for organ in (anat.organs["liver"][0][0], anat.organs["spleen"][0][0]):
        top = float(organ.center[2] + organ.axes[2])
        domes.append((
            float(organ.center[0]), float(organ.center[1]), top + rng.uniform(-8.0, 4.0),
            0.55 * cav_x * rng.uniform(0.85, 1.15), 0.5 * (cav_y + cav_back) * rng.uniform(0.6, 0.8), rng.uniform(30.0, 55.0),
        ))  # fmt: skip
    low_peak = min(d[2] for d in domes)
    heart = _shape(rng, (0.18 * cav_x, -0.3 * cav_y, low_peak + 30.0), (58.0, 45.0, 52.0), (0, 0, 30))
    return Thorax(
        domes=tuple(domes),
        diaphragm=rng.uniform(3.0, 6.0),
        heart=heart,
        rib_period=rng.uniform(30.0, 38.0),
        rib_width=rng.uniform(8.0, 12.0),
        rib_slope=rng.uniform(0.3, 0.6),
        rib_phase=rng.uniform(0.0, 40.0),
        rib_floor=low_peak - rng.uniform(90.0, 130.0),
        scan_above=rng.uniform(0.0, 140.0),
    )


# ---------------------------------------------------------------------------- acquisition


def _z_range(anat: Anatomy, rng: np.random.Generator) -> tuple[float, float]:
    """Cranio-caudal window: both kidneys whole, most of the liver, random extent and offset."""
    kidneys = [s for name in ("kidney_right", "kidney_left") for s, adds in anat.organs[name] if adds]
    low_need = min(k.center[2] - k.axes.max() for k in kidneys) - 8.0
    liver, spleen = anat.organs["liver"][0][0], anat.organs["spleen"][0][0]
    high_need = max(
        max(k.center[2] + k.axes.max() for k in kidneys) + 8.0,
        liver.center[2] + 0.45 * liver.axes[2],
        spleen.center[2] + 0.4 * spleen.axes[2],
    )
    if anat.thorax is not None:
        high_need = max(high_need, anat.thorax.top + anat.thorax.scan_above)
    extent = max(rng.uniform(160, 300), high_need - low_need)
    lo_min = max(high_need - extent, low_need - 120.0)
    low = rng.uniform(lo_min, max(lo_min, low_need))
    return low, low + extent


def _axis(center: float, extent: float, spacing: float, limit: int) -> np.ndarray:
    n = min(int(round(extent / spacing)) + 1, limit)
    return (center + (np.arange(n) - (n - 1) / 2) * spacing).astype(np.float64)


def _sample_acquisition(anat: Anatomy, rng: np.random.Generator, direction) -> Acquisition:
    chosen = LPS_DIRECTION if rng.random() < 0.5 else RAS_DIRECTION
    fov = rng.uniform(max(320.0, 2 * anat.body_axes[0] + 30), 420.0)
    inplane = rng.uniform(max(1.5, fov / (MAX_INPLANE - 1)), 3.0)
    z0, z1 = _z_range(anat, rng)
    slice_spacing = rng.uniform(max(2.0, (z1 - z0) / (MAX_SLICES - 1)), 5.0)
    cy = (anat.body_axes[2] - anat.body_axes[1]) / 2 + rng.uniform(-10, 10)
    return Acquisition(
        xs=_axis(rng.uniform(-8, 8), fov, inplane, MAX_INPLANE),
        ys=_axis(cy, fov, inplane, MAX_INPLANE),
        zs=_axis((z0 + z1) / 2, z1 - z0, slice_spacing, MAX_SLICES),
        direction=chosen if direction is None else _check_direction(direction),
        contrast=bool(rng.random() < 0.5),
        rng=rng,
    )


# Cone-beam CT (an on-board imager, e.g. for image-guided radiotherapy): a circular reconstructed
# field of view narrower than the body, a short cranio-caudal coverage, no contrast agent.
CBCT_FOV_MM = (250.0, 300.0)  # diameter of the reconstruction circle
CBCT_COVERAGE_MM = (150.0, 200.0)  # cranio-caudal extent


def _sample_cbct_acquisition(anat: Anatomy, rng: np.random.Generator, direction) -> Acquisition:
    """A CBCT grid: the square around the reconstruction circle, centred on the kidneys and liver."""
    chosen = LPS_DIRECTION if rng.random() < 0.5 else RAS_DIRECTION
    fov = rng.uniform(*CBCT_FOV_MM)
    inplane = rng.uniform(1.5, 2.5)
    kidneys = [s for name in ("kidney_right", "kidney_left") for s, adds in anat.organs[name] if adds]
    liver = anat.organs["liver"][0][0]
    low = min(k.center[2] - k.axes.max() for k in kidneys)
    high = max(max(k.center[2] + k.axes.max() for k in kidneys), liver.center[2] + 0.45 * liver.axes[2])
    extent = rng.uniform(*CBCT_COVERAGE_MM)
    cz = (low + high) / 2 + rng.uniform(-15, 15)
    cy = (anat.body_axes[2] - anat.body_axes[1]) / 2 + rng.uniform(-10, 10)
    return Acquisition(
        xs=_axis(rng.uniform(-8, 8), fov, inplane, MAX_INPLANE),
        ys=_axis(cy, fov, inplane, MAX_INPLANE),
        zs=_axis(cz, extent, rng.uniform(2.0, 3.0), MAX_SLICES),
        direction=chosen if direction is None else _check_direction(direction),
        contrast=False,
        rng=rng,
    )


def _check_direction(direction) -> tuple[float, ...]:
    d = tuple(float(v) for v in direction)
    if d not in (LPS_DIRECTION, RAS_DIRECTION):
        raise InputError(f"direction {direction}: not supported; give {LPS_DIRECTION} or {RAS_DIRECTION}.")
    return d


# ---------------------------------------------------------------------------- tissue map


def _deformed_coords(anat: Anatomy, acq: Acquisition) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Physical coordinates (z, y, x grids) displaced by the patient's smooth deformation."""
    w = _grid_weights(acq, _DEFORM_GRID)
    x = acq.xs.astype(np.float32)[None, None, :] + _upsample(anat.deform[0], *w)
    y = acq.ys.astype(np.float32)[None, :, None] + _upsample(anat.deform[1], *w)
    z = acq.zs.astype(np.float32)[:, None, None] + _upsample(anat.deform[2], *w)
    return x, y, z


def _body_form(anat: Anatomy, acq: Acquisition, shrink: float, back: float) -> np.ndarray:
    """Degree-2 homogeneous form (ny, nx) of the axial body outline shrunk by ``shrink`` mm
    (``back`` mm posteriorly): 1 on the outline, an ellipse in front, a flatter back."""
    ax, ay_ant, ay_post = anat.body_axes
    x = (acq.xs / (ax - shrink))[None, :]
    y = acq.ys[:, None]
    v = y / np.where(y < 0, ay_ant - shrink, ay_post - back)
    u2, v2 = x * x, v * v
    r2 = u2 + v2
    return np.where(y < 0, r2, 0.5 * r2 + 0.5 * np.sqrt(u2 * u2 + v2 * v2)).astype(np.float32)


def _body_layers(anat: Anatomy, acq: Acquisition) -> np.ndarray:
    """Body layer index per voxel: 0 air, 1 subcutaneous fat, 2 muscle wall, 3 abdominal cavity.

    The cross-section is extruded along z and scaled by a smooth cranio-caudal wobble.
    """
    amp, period, phase = anat.body_wobble
    scale = 1 + amp * np.sin(2 * np.pi * acq.zs / period + phase)
    limit = (scale * scale).astype(np.float32)[:, None, None]
    fat = anat.fat
    layers = np.zeros((len(acq.zs), len(acq.ys), len(acq.xs)), np.uint8)
    for shrink, back in ((0.0, 0.0), (fat, 0.4 * fat), (fat + anat.muscle, 0.4 * fat + anat.muscle)):
        layers += _body_form(anat, acq, shrink, back)[None] <= limit
    return layers


class _Painter:
    """Tissue and label maps painted in order; later paint wins."""

    def __init__(self, shape: tuple[int, int, int]):
        self.tissue = np.zeros(shape, np.uint8)
        self.label = np.zeros(shape, np.uint8)

    def paint(self, sl, mask: np.ndarray, tissue: str, label: int = 0) -> None:
        self.tissue[sl][mask] = T[tissue]
        self.label[sl][mask] = label


def _paint_body(p: _Painter, anat: Anatomy, acq: Acquisition) -> np.ndarray:
    layers = _body_layers(anat, acq)
    p.tissue[...] = np.array([T["air"], T["fat"], T["muscle"], T["visceral_fat"]], np.uint8)[layers]
    return layers == 3


def _paint_bowel(p: _Painter, anat: Anatomy, acq: Acquisition, pts, cavity: np.ndarray) -> None:
    y = pts[1]
    loops = _upsample(anat.bowel, *_grid_weights(acq, _BOWEL_GRID))
    front = y < anat.spine_y - anat.vertebral_radius - 15
    bowel = cavity & front & (loops > 0.1)
    p.paint((slice(None),) * 3, bowel, "bowel")
    for pocket in anat.gas:
        sl, mask = _shape_mask(pocket, acq, pts)
        if sl is not None:
            p.paint(sl, bowel[sl] & mask, "gas")


def _shape_mask(shape: Ellipsoid, acq: Acquisition, pts, margin: float = 25.0):
    """(slices, mask) of a shape evaluated in its bounding box, or (None, None) off the grid."""
    sl = _box(acq, *shape.bounds(margin))
    if sl is None:
        return None, None
    return sl, _inside(shape, tuple(c[sl] for c in pts))


def _paint_organs(p: _Painter, anat: Anatomy, acq: Acquisition, pts, cavity: np.ndarray) -> None:
    """Organs in order (later ones win where they touch); holes become fat inside their organ."""
    for name, parts in anat.organs.items():
        tissue, value = ("kidney" if name.startswith("kidney") else name), LABEL[name]
        for shape, adds in parts:
            sl, mask = _shape_mask(shape, acq, pts)
            if sl is None:
                continue
            if adds:
                p.paint(sl, mask & cavity[sl], tissue, value)
            else:
                p.paint(sl, mask & (p.label[sl] == value), "visceral_fat")


def _paint_muscles(p: _Painter, anat: Anatomy, acq: Acquisition, pts) -> None:
    x, y, z = pts
    vr, sy = anat.vertebral_radius, anat.spine_y
    sl = _box(acq, np.array([-110, sy - 40, -1e4]), np.array([110, sy + 110, 1e4]))
    if sl is None:
        return
    xs, ys, zs = x[sl], y[sl], z[sl]
    psoas = np.clip(5 + 0.1 * (40 - zs), 4, 20)
    for side in (-1, 1):
        psoas_mask = ((xs - side * (vr + 0.8 * psoas)) / psoas) ** 2 + (
            (ys - sy) / (0.9 * psoas + 4)
        ) ** 2 <= 1
        erector = ((xs - side * 36) / 30) ** 2 + ((ys - sy - 58) / 24) ** 2 <= 1
        p.paint(sl, (psoas_mask | erector) & (p.tissue[sl] != T["air"]), "muscle")


def _paint_spine(p: _Painter, anat: Anatomy, acq: Acquisition, pts) -> None:
    x, y, z = pts
    vr, sy = anat.vertebral_radius, anat.spine_y
    sl = _box(acq, np.array([-60, sy - vr - 2, -1e4]), np.array([60, sy + vr + 60, 1e4]))
    if sl is None:
        return
    xs, ys, zs = x[sl], y[sl], z[sl]
    level = np.mod(zs - anat.vertebra_phase, 36.0)
    disc = level < 8.0
    r_body = np.sqrt(xs * xs + (ys - sy) ** 2)
    canal_y = sy + vr + 9
    r_canal = np.sqrt(xs * xs + (ys - canal_y) ** 2)
    arch = (r_canal <= 16) & (ys >= canal_y - 3)
    spinous = (np.abs(xs) <= 4) & (ys > canal_y) & (ys <= canal_y + 45)
    transverse = (np.abs(xs) <= 42) & (np.abs(ys - canal_y + 4) <= 5) & (np.abs(level - 22) < 7)
    p.paint(sl, (arch | spinous | transverse) & ~disc, "cortical_bone")
    p.paint(sl, r_body <= vr, "cortical_bone")
    p.paint(sl, (r_body <= vr - 2.5) & ~disc, "marrow")
    p.paint(sl, (r_body <= vr) & disc, "disc")
    p.paint(sl, r_canal <= 9, "csf")


def _paint_thorax(p: _Painter, anat: Anatomy, acq: Acquisition, pts, cavity: np.ndarray) -> None:
    """Above the diaphragm, inside the cavity: lung, and the heart; the diaphragm's muscle between
    them and the abdomen; ribs in the body wall. Whatever was painted there before (bowel, the
    organs' tops) is replaced, label included."""
    th = anat.thorax
    if th is None:
        return
    x, y, z = pts
    floor = th.diaphragm_height(x, y)
    above = cavity & (z > floor)
    lung = above & (z > floor + th.diaphragm)
    p.paint((slice(None),) * 3, above & ~lung, "muscle")
    p.paint((slice(None),) * 3, lung, "lung")
    sl, mask = _shape_mask(th.heart, acq, pts)
    if sl is not None:
        p.paint(sl, mask & lung[sl], "heart")
    wall = (p.tissue == T["muscle"]) & ~cavity & (p.label == 0)
    level = np.mod(z - th.rib_slope * y - th.rib_phase, th.rib_period)
    sternum_gap = (np.abs(x) < 25.0) & (y < 0)
    p.paint((slice(None),) * 3, wall & (level < th.rib_width) & (z > th.rib_floor) & ~sternum_gap, "cortical_bone")


def _paint_vessels(p: _Painter, anat: Anatomy, acq: Acquisition, pts) -> None:
    x, y, _ = pts
    for (cx, cy, r), tissue in ((anat.aorta, "aorta"), (anat.vein, "vein")):
        sl = _box(acq, np.array([cx - r - 20, cy - r - 20, -1e4]), np.array([cx + r + 20, cy + r + 20, 1e4]))
        if sl is not None:
            p.paint(sl, (x[sl] - cx) ** 2 + (y[sl] - cy) ** 2 <= r * r, tissue)


def _tissue_maps(anat: Anatomy, acq: Acquisition) -> tuple[np.ndarray, np.ndarray]:
    """Tissue class map and label map on the acquisition grid (LPS array order)."""
    pts = _deformed_coords(anat, acq)
    p = _Painter(pts[0].shape)
    cavity = _paint_body(p, anat, acq)
    _paint_bowel(p, anat, acq, pts, cavity)
    _paint_organs(p, anat, acq, pts, cavity)
    _paint_muscles(p, anat, acq, pts)
    _paint_thorax(p, anat, acq, pts, cavity)
    _paint_vessels(p, anat, acq, pts)
    _paint_spine(p, anat, acq, pts)
    return p.tissue, p.label


# ---------------------------------------------------------------------------- intensities


def _texture(acq: Acquisition, cell: float = 14.0) -> np.ndarray:
    """Smooth unit-variance-ish random field over the grid (tissue heterogeneity)."""
    grids = []
    for coords in (acq.xs, acq.ys, acq.zs):
        count = int(np.ceil((coords[-1] - coords[0]) / cell)) + 5
        grids.append((coords[0] - 2 * cell, cell, count))
    control = acq.rng.normal(0.0, 2.2, (grids[2][2], grids[1][2], grids[0][2]))
    return _upsample(control, *_grid_weights(acq, tuple(grids)))


def _blur(image: np.ndarray, acq: Acquisition) -> np.ndarray:
    inplane = acq.rng.uniform(0.4, 0.7)
    return ndimage.gaussian_filter(image, (0.35, inplane, inplane), truncate=2.5)


def _per_tissue(drawn: np.ndarray, fill: float) -> np.ndarray:
    """Per-tissue float32 values: ``drawn`` for the abdominal tissues, ``fill`` for the thorax's."""
    out = np.full(len(TISSUES), fill, np.float32)
    out[:ABDOMEN_TISSUES] = drawn
    return out


def _ct_attenuation(tissue: np.ndarray, acq: Acquisition, contrast: bool) -> np.ndarray:
    """HU per tissue (portal-venous values when ``contrast``) with per-case bone values, a small
    jitter, texture and blur: what CT and CBCT phantoms share before their own noise."""
    rng = acq.rng
    values = np.array([CT_TABLE[t][1 if contrast else 0] for t in TISSUES], np.float32)
    values[T["cortical_bone"]] = rng.uniform(650, 900)
    values[T["marrow"]] = rng.uniform(280, 400)
    jitter = _per_tissue(rng.normal(0, 5, ABDOMEN_TISSUES), 0.0)
    jitter[[T["air"], T["gas"]]] = 0
    amps = np.array([CT_TABLE[t][2] for t in TISSUES], np.float32)
    image = (values + jitter)[tissue] + amps[tissue] * _texture(acq)
    return _blur(image, acq)


def _ct_image(tissue: np.ndarray, acq: Acquisition) -> np.ndarray:
    rng = acq.rng
    image = _ct_attenuation(tissue, acq, contrast=acq.contrast)
    image += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(rng.uniform(8, 25))
    return np.clip(np.rint(image), -1024, 3071).astype(np.int16)


def _bias_field(acq: Acquisition) -> np.ndarray:
    grids = []
    for coords in (acq.xs, acq.ys, acq.zs):
        cell = max((coords[-1] - coords[0]) / 2, 40.0)
        grids.append((coords[0] - 2 * cell, cell, 7))
    control = acq.rng.uniform(0.75, 1.25, (7, 7, 7))
    return _upsample(control, *_grid_weights(acq, tuple(grids)))


def _mr_image(tissue: np.ndarray, acq: Acquisition) -> np.ndarray:
    rng = acq.rng
    values = np.array([MR_TABLE[t][0] for t in TISSUES], np.float32)
    values *= _per_tissue(rng.uniform(0.9, 1.1, ABDOMEN_TISSUES), 1.0)
    amps = np.array([MR_TABLE[t][1] for t in TISSUES], np.float32)
    image = values[tissue] * (1 + amps[tissue] * _texture(acq))
    image = _blur(image, acq) * _bias_field(acq) * np.float32(rng.uniform(0.6, 1.4))
    sigma = np.float32(rng.uniform(8, 25))
    real = image + rng.standard_normal(image.shape, dtype=np.float32) * sigma
    imag = rng.standard_normal(image.shape, dtype=np.float32) * sigma
    return np.rint(np.sqrt(real * real + imag * imag)).clip(0, 32767).astype(np.int16)


def _fov_radius2(acq: Acquisition) -> np.ndarray:
    """In-plane (ny, nx) squared distance from the grid centre over the squared radius of the
    reconstruction circle inscribed in a CBCT grid (<= 1 inside the circle)."""
    cx, cy = (acq.xs[0] + acq.xs[-1]) / 2, (acq.ys[0] + acq.ys[-1]) / 2
    radius = min(acq.xs[-1] - acq.xs[0], acq.ys[-1] - acq.ys[0]) / 2
    return ((acq.xs[None, :] - cx) ** 2 + (acq.ys[:, None] - cy) ** 2) / radius**2


def _fov_disc(acq: Acquisition) -> np.ndarray:
    """In-plane (ny, nx) mask of the reconstruction circle of a CBCT grid."""
    return _fov_radius2(acq) <= 1.0


def _streaks(tissue: np.ndarray, acq: Acquisition) -> np.ndarray:
    """(nz, ny, nx) streak pattern: 4-8 thin straight bands, alternately bright and dark, each
    through a random bone or gas voxel (the dense or empty objects that cause them), 30-90 HU
    at their centre line, 1.5-4 mm wide, waxing and waning slowly along z."""
    rng = acq.rng
    sources = np.argwhere(np.isin(tissue, [T["cortical_bone"], T["gas"]]))
    out = np.zeros(tissue.shape[1:], np.float32)
    n = int(rng.integers(4, 9))
    for k in range(n):
        if len(sources):
            _, iy, ix = sources[int(rng.integers(len(sources)))]
            px, py = acq.xs[ix], acq.ys[iy]
        else:
            px, py = np.mean(acq.xs), np.mean(acq.ys)
        angle = rng.uniform(0, np.pi)
        d = (acq.xs[None, :] - px) * np.sin(angle) - (acq.ys[:, None] - py) * np.cos(angle)
        width, amplitude = rng.uniform(1.5, 4.0), rng.uniform(30, 90) * (1 if k % 2 == 0 else -1)
        out += (amplitude * np.exp(-((d / width) ** 2))).astype(np.float32)
    z_mod = 1 + 0.4 * np.sin(2 * np.pi * acq.zs / rng.uniform(60, 120) + rng.uniform(0, 2 * np.pi))
    return out[None] * z_mod.astype(np.float32)[:, None, None]


def _cbct_image(tissue: np.ndarray, acq: Acquisition) -> np.ndarray:
    """CT-like Hounsfield units degraded as a cone-beam reconstruction: non-contrast CT values
    and texture, then a calibration error (gain 0.92-1.05, offset -50..50 HU), cupping (the centre
    of the circle darker by 40-120 HU than its rim, falling as ``1 - (r/R)^2``), streaks
    (:func:`_streaks`), Gaussian noise of 30-60 HU (about twice CT's) and -1000 HU outside the
    reconstruction circle."""
    rng = acq.rng
    image = _ct_attenuation(tissue, acq, contrast=False)
    image = image * np.float32(rng.uniform(0.92, 1.05)) + np.float32(rng.uniform(-50, 50))
    cupping = rng.uniform(40, 120) * np.clip(1 - _fov_radius2(acq), 0, None)
    image -= cupping.astype(np.float32)[None]
    image += _streaks(tissue, acq)
    image += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(rng.uniform(30, 60))
    image[:, ~_fov_disc(acq)] = -1000
    return np.clip(np.rint(image), -1024, 3071).astype(np.int16)


# ---------------------------------------------------------------------------- public API


def _check_modality(modality: str) -> str:
    name = str(modality).upper()
    if name not in MODALITIES:
        raise InputError(
            f"modality {modality!r}: not supported by the phantom generator; use one of {', '.join(MODALITIES)}."
        )
    return name


def _to_volume(array: np.ndarray, acq: Acquisition) -> Volume:
    """Store an LPS-ordered array with the acquisition's direction, keeping physical positions."""
    spacing = tuple(float(c[1] - c[0]) for c in (acq.xs, acq.ys, acq.zs))
    if acq.direction == RAS_DIRECTION:
        array = array[:, ::-1, ::-1]
        origin = (float(acq.xs[-1]), float(acq.ys[-1]), float(acq.zs[0]))
    else:
        origin = (float(acq.xs[0]), float(acq.ys[0]), float(acq.zs[0]))
    return Volume(np.ascontiguousarray(array), spacing, origin, acq.direction)


THORAX_STREAM = 50  # the thorax's random stream: the rest of a phantom draws exactly as without it
ANATOMY_STREAM = 51  # the random stream of the second anatomy's wider shapes
ANATOMIES = (1, 2)


def check_anatomy(anatomy: int) -> int:
    """``anatomy`` if it is one of :data:`ANATOMIES`, else an error naming the choices."""
    if isinstance(anatomy, bool) or not isinstance(anatomy, (int, np.integer)) or anatomy not in ANATOMIES:
        raise InputError(f"anatomy={anatomy!r}: give 1 (the first phantom anatomy) or 2 (wider organ shapes).")
    return int(anatomy)


def anatomy_record(anatomy: int | Mapping[str, int]) -> int | dict[str, int]:
    """``anatomy`` checked, as recipes and provenance record it: one anatomy for every modality's
    phantoms, or a mapping from modality to anatomy (``{"CT": 2}``: the wider shapes for the CT phantoms
    only; a modality not named draws the first), its names upper-case and sorted, those of the first
    anatomy left out (a mapping that names none of the second is the first anatomy, ``1``)."""
    if not isinstance(anatomy, Mapping):
        return check_anatomy(anatomy)
    if not anatomy:
        raise InputError("anatomy={}: give 1, 2 or a mapping from modality to anatomy, e.g. {\"CT\": 2}.")
    names = {str(m).upper(): check_anatomy(a) for m, a in anatomy.items()}
    unknown = sorted(set(names) - set(MODALITIES))
    if unknown:
        raise InputError(f"anatomy: unknown modalities {unknown}; use some of {list(MODALITIES)}.")
    return {m: a for m, a in sorted(names.items()) if a != 1} or 1


def modality_anatomy(anatomy: int | Mapping[str, int], modality: str) -> int:
    """The anatomy the phantoms of ``modality`` draw under ``anatomy`` (see :func:`anatomy_record`)."""
    record = anatomy_record(anatomy)
    return record if isinstance(record, int) else record.get(modality.upper(), 1)


def _simulate(
    modality: str, seed: int, direction, thorax: bool = False, anatomy: int = 1
) -> tuple[str, Acquisition, np.ndarray, np.ndarray]:
    name = _check_modality(modality)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed {seed!r}: must be a non-negative integer.")
    if not isinstance(thorax, bool):
        raise InputError(f"thorax={thorax!r}: give true or false.")
    check_anatomy(anatomy)
    anat = _sample_anatomy(np.random.default_rng([int(seed), 0]))
    if anatomy == 2:
        _widen_organs(np.random.default_rng([int(seed), ANATOMY_STREAM]), anat)
    if thorax:
        anat.thorax = _sample_thorax(np.random.default_rng([int(seed), THORAX_STREAM]), anat)
    acq_rng = np.random.default_rng([int(seed), 1 + MODALITIES.index(name)])
    sample = _sample_cbct_acquisition if name == "CBCT" else _sample_acquisition
    acq = sample(anat, acq_rng, direction)
    tissue, label = _tissue_maps(anat, acq)
    if name == "CBCT":  # nothing is seen, so nothing is labelled, outside the reconstruction circle
        label[:, ~_fov_disc(acq)] = 0
    return name, acq, tissue, label


def generate_phantom(
    modality: str, seed: int, *, direction: tuple[float, ...] | None = None, thorax: bool = False, anatomy: int = 1
) -> tuple[Volume, Volume]:
    """One synthetic abdominal scan: ``(image, label)`` on the same grid.

    The anatomy depends on ``seed`` only; the acquisition on ``seed`` and ``modality``.
    ``direction`` forces the stored orientation (identity or diag(-1, -1, 1)); organ positions in
    physical space do not depend on it. CT is int16 Hounsfield units, MR int16 arbitrary units,
    CBCT int16 roughly calibrated Hounsfield units (see :func:`_cbct_image`; its labels are 0
    outside the reconstruction circle). ``thorax``: add lung bases, diaphragm, heart and lower ribs
    (see the module docstring); the same seed gives the same patient below the diaphragm. ``anatomy``:
    1 (the first organ shapes) or 2 (wider organ shapes, see the module docstring).
    """
    name, acq, tissue, label = _simulate(modality, seed, direction, thorax, anatomy)
    image = {"CT": _ct_image, "MR": _mr_image, "CBCT": _cbct_image}[name](tissue, acq)
    return _to_volume(image, acq), _to_volume(label, acq)


def generate_tissue_map(
    modality: str, seed: int, *, direction: tuple[float, ...] | None = None, thorax: bool = False, anatomy: int = 1
) -> Volume:
    """The tissue class map (uint8, values index :data:`TISSUES`) behind :func:`generate_phantom`."""
    _, acq, tissue, _ = _simulate(modality, seed, direction, thorax, anatomy)
    return _to_volume(tissue, acq)


def patient_seed(seed: int, modality: str, index: int) -> int:
    """Seed of case ``index`` of ``modality`` in a dataset drawn with ``seed`` (distinct patients)."""
    state = np.random.SeedSequence([int(seed), MODALITIES.index(_check_modality(modality)), int(index)])
    return int(state.generate_state(1)[0])




def _check_extra(extra: Mapping[str, int] | None) -> dict[str, int]:
    """``extra`` as ``{canonical modality name: count}``; only :data:`EXTRA_MODALITIES` are allowed."""
    if extra is None:
        return {}
    if not isinstance(extra, Mapping):
        raise InputError(f"extra={extra!r}: give a mapping of modality to count, e.g. {{'CBCT': 3}}.")
    out: dict[str, int] = {}
    for modality, n in extra.items():
        name = str(modality).upper()
        if name not in EXTRA_MODALITIES:
            raise InputError(
                f"extra modality {modality!r}: not supported; use one of {', '.join(EXTRA_MODALITIES)} "
                "(CT and MR are n_ct and n_mr)."
            )
        out[name] = n
    return out


def _check_counts(n_ct: int, n_mr: int, n_validation: int, extra: Mapping[str, int] | None = None) -> None:
    counts = {"n_ct": n_ct, "n_mr": n_mr, **{f"extra[{m!r}]": n for m, n in (extra or {}).items()}}
    for name, n in (*counts.items(), ("n_validation", n_validation)):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise InputError(f"{name}={n!r}: must be a non-negative integer.")
    if sum(counts.values()) == 0:
        raise InputError("n_ct=0 and n_mr=0: ask for at least one CT or MR case.")
    for name, n in counts.items():
        if 0 < n < n_validation:
            raise InputError(
                f"n_validation={n_validation} exceeds {name}={n}; give at most {n} validation cases."
            )


def thorax_modalities(thorax: bool | Collection[str]) -> frozenset[str]:
    """The modalities whose phantoms get a thorax: all for ``True``, none for ``False``, else those named
    (``["CT"]``; case-insensitive)."""
    if isinstance(thorax, bool):
        return frozenset(MODALITIES) if thorax else frozenset()
    if isinstance(thorax, str) or not isinstance(thorax, Collection) or not thorax:
        raise InputError(f"thorax={thorax!r}: give true, false or a non-empty list of modalities, e.g. [\"CT\"].")
    names = frozenset(str(m).upper() for m in thorax)
    unknown = sorted(names - set(MODALITIES))
    if unknown:
        raise InputError(f"thorax: unknown modalities {unknown}; use some of {list(MODALITIES)}.")
    return names


def thorax_record(thorax: bool | Collection[str]) -> bool | list[str]:
    """``thorax`` as recipes and provenance record it: ``True``, ``False`` or the sorted modality names."""
    return thorax if isinstance(thorax, bool) else sorted(thorax_modalities(thorax))


def drawing_record(phantoms: Mapping) -> dict:
    """How a ``phantoms`` block (a recipe's, or a data set's provenance record) draws its phantoms, as
    recipes and provenance record it: ``{"thorax": True | [modalities]}`` and ``{"anatomy": 2}`` where
    set, nothing for the defaults (so the records of older recipes stay as they were)."""
    record = {}
    if phantoms.get("thorax"):
        record["thorax"] = thorax_record(phantoms["thorax"])
    anatomy = anatomy_record(phantoms.get("anatomy", 1))
    if anatomy != 1:
        record["anatomy"] = anatomy
    return record


def drawing_suffix(record: Mapping) -> str:
    """A folder-name suffix for a drawing record (:func:`drawing_record`): nothing for the defaults, else
    ``-thorax`` or ``-thorax-ct`` and ``-anatomy2`` or ``-anatomy2-ct`` (the modalities a key is limited to)."""
    def named(word: str, value) -> str:
        return f"-{word}" + ("".join(f"-{m.lower()}" for m in value) if isinstance(value, Collection) else "")

    thorax, anatomy = record.get("thorax", False), record.get("anatomy", 1)
    return (named("thorax", thorax) if thorax else "") + (named("anatomy2", anatomy) if anatomy != 1 else "")


def _only(some: Sequence[str], kinds: Sequence[str]) -> str:
    """`` (CT only)`` when ``some`` are not all of the data set's ``kinds``, else nothing."""
    return "" if set(some) == set(kinds) else f" ({' and '.join(some)} only)"


def phantom_dataset_document(
    n_ct: int, n_mr: int, seed: int = 0, n_validation: int = 0, *, extra: Mapping[str, int] | None = None,
    thorax: bool | Collection[str] = False, anatomy: int | Mapping[str, int] = 1,
) -> dict:
    """The ``dataset.json`` document that :func:`write_phantom_dataset` writes for these counts (its
    bytes are ``json.dumps(document, indent=2) + "\\n"``), without generating any image."""
    extra = _check_extra(extra)
    _check_counts(n_ct, n_mr, n_validation, extra)
    kinds_present = ("CT", "MR", *extra)
    wider = [m for m in kinds_present if modality_anatomy(anatomy, m) == 2]
    wide = f", wider organ shapes{_only(wider, kinds_present)}" if wider else ""
    splits: dict[str, list] = {"training": [], "validation": [], "test": []}
    for modality, count in (("CT", n_ct), ("MR", n_mr), *extra.items()):
        for i in range(count):
            rel = f"{modality.lower()}_{i:03d}.nii.gz"
            split = "validation" if i >= count - n_validation else "training"
            splits[split].append({"image": f"imagesTr/{rel}", "label": f"labelsTr/{rel}", "modality": modality})
    labels = {"0": "background", **{str(lab.value): lab.name for lab in ABDOMEN_LABELS}}
    kinds = "CT and MR" if not extra else f"CT, MR and {', '.join(extra)}"
    chest = thorax_modalities(thorax)
    present = [m for m in kinds_present if m in chest]
    whose = _only(present, kinds_present)
    return {
        "name": "abdomen-phantoms",
        "description": f"Synthetic unpaired abdominal {kinds} phantoms (MultiModalSeg generator, seed {seed}{wide}"
        + (f", with lung bases, diaphragm, heart and lower ribs{whose})" if present else ")"),
        "licence": "CC0-1.0",
        "labels": labels,
        **splits,
    }


def write_phantom_dataset(
    out_dir: str | Path,
    n_ct: int,
    n_mr: int,
    seed: int = 0,
    n_validation: int = 0,
    *,
    extra: Mapping[str, int] | None = None,
    progress: Callable[[int, int], None] | None = None,
    thorax: bool | Collection[str] = False,
    anatomy: int | Mapping[str, int] = 1,
) -> Path:
    """Write an unpaired CT + MR phantom dataset (NIfTI + ``dataset.json``); return the json path.

    The last ``n_validation`` cases of each modality go to the ``validation`` split. ``extra``
    adds cases of other modalities, e.g. ``{"CBCT": 3}`` (files ``cbct_000.nii.gz``, ...), after
    the CT and MR ones; without it the output is exactly that of a CT + MR dataset.
    ``progress(done, total)`` is called after each case is written. ``thorax``: every case with
    lung bases, diaphragm, heart and lower ribs (see :func:`generate_phantom`); a list of modalities
    gives the thorax to their cases only. ``anatomy``: 1 (the first organ shapes) or 2 (wider ones), or
    a mapping from modality to either (``{"CT": 2}``; see :func:`anatomy_record`).
    """
    data = phantom_dataset_document(n_ct, n_mr, seed, n_validation, extra=extra, thorax=thorax, anatomy=anatomy)
    chest = thorax_modalities(thorax)
    shapes = {m: modality_anatomy(anatomy, m) for m in MODALITIES}  # checked once, not per case
    out = Path(out_dir)
    cases = [(m, i) for m, count in (("CT", n_ct), ("MR", n_mr), *_check_extra(extra).items()) for i in range(count)]
    for done, (modality, i) in enumerate(cases, 1):
        rel = f"{modality.lower()}_{i:03d}.nii.gz"
        image, label = generate_phantom(modality, patient_seed(seed, modality, i), thorax=modality in chest,
                                        anatomy=shapes[modality])
        write_image_atomic(image.to_sitk(), out / "imagesTr" / rel)
        write_labelmap(label, out / "labelsTr" / rel)
        if progress is not None:
            progress(done, len(cases))
    path = out / "dataset.json"
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")
    return path
