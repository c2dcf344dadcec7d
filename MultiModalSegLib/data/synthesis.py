"""Training images drawn from label maps: domain randomisation after SynthSeg (Billot et al., Medical
Image Analysis 86, 2023).

A *source* is a label map with many structures (a full TotalSegmentator map, a phantom's map) in
model space, with the model's labels beside it. Voxels the map leaves unlabelled get one of four
intensity classes of the source image (:func:`.tissues.intensity_classes`), so the body wall, fat
and bowel gas are structures too. For each patch (SynthSeg's generative model, Sec. 3.1):

1. the label patch is deformed (MONAI ``Rand3DElasticd``: a random affine and a smooth elastic
   field, nearest-neighbour, so labels stay labels);
2. every structure gets a Gaussian intensity: mean and spread drawn per sample. CT: near its
   tissue's Hounsfield units, native or portal-venous, or the value measured in the source CT;
   MR: a weighting drawn among T1, T1 after contrast, T2 and the four Dixon images (water, fat,
   in-phase, opposed-phase), or fully random means (SynthSeg's own prior) in a quarter of samples;
3. a partial-volume blur, then for MR a smooth multiplicative bias field (MONAI
   ``RandBiasFieldd``);
4. an acquisition: a slice axis (axial, coronal or sagittal), a slice thickness and in-plane
   spacing of 1 to 7 mm (blur of that width, down- and up-sampling on that axis), sometimes a slab
   of 10 to 40 slices or a narrowed in-plane field of view, with nothing outside;
5. noise, the modality's own intensity profile (the one inference uses; for a share of the items,
   bounds moved toward its other foreground choice when a recipe asks, :mod:`.profile_jitter`; its
   ``log_compression`` curve where it has one), then a random gamma
   (MONAI ``RandGaussianNoised``, ``RandAdjustContrastd``; range and probability set per run,
   :data:`DEFAULT_GAMMA` by default). A gamma above 1 darkens the mid-tones against the brightest
   tissue: whole-volume MR normalisation puts organs near 0 when fat dominates the image (a T1
   or a Dixon fat image), an appearance a fixed weighting table alone rarely draws;
6. for a recipe's ``polarity`` share, the negative ``1 - x`` (:mod:`.polarity`).

Real texture (a sampler with ``texture=True``: the ``textured`` kind of a recipe's MR mix): step 2 paints
every voxel of a structure with independent Gaussian noise, so no drawn MR shows what a real image holds
inside an organ (vessels, partial volume at its border, the grain of the tissue). A textured item is drawn
from a real CT source, and each voxel of a structure whose HU the source measured keeps its place in that
structure's distribution in the real CT, :func:`textured` (choice beyond the paper: the CT's texture under
the MR contrast drawn; structures without a measurement are painted as in step 2). Phantom images are
painted themselves and carry no texture to keep.

Two generators (a recipe's ``synthesis.generator``; older recipes, which do not name one, keep 1):

- **1**, as the shipped models were trained: a source's label values are read as generation ids
  (TotalSegmentator's), so a phantom's organs, labelled 1-4, were drawn with the tissues of
  TotalSegmentator ids 1-4 (its liver as spleen, its spleen and right kidney as kidney, its left
  kidney as gallbladder fluid); and step 5 takes the profile's percentiles over the patch, so the
  darkest tissue of a patch without air went to 0, where whole-volume normalisation at inference
  puts air;
- **2**: voxels carrying a model label get that organ's own generation id
  (:func:`.tissues.generation_ids`); and the profile's bounds are taken over the whole source as this
  item draws it (a sample of its voxels, every structure with this item's mean and spread, missing
  structures drawn from a stream of their own, each voxel times a value of the item's MR gain and
  bias field), then applied to the patch: the scale a scan's own whole-volume normalisation gives.
  Neither change alters another random draw of the item.

Everything random is drawn from the item's seed, which the stateless samplers of
:mod:`.sampling` derive from ``(seed, stream, step)``: a resumed run draws the same images.
Choice beyond the paper: SynthSeg samples every intensity uniformly at random; here three quarters
of MR samples follow a real weighting's order of tissues, and CT stays near real HU, because the
model keeps one intensity profile per modality and is meant to meet real CT and MR.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from monai.transforms import Rand3DElasticd, RandAdjustContrastd, RandBiasFieldd, RandGaussianNoised
from scipy import ndimage

from ..errors import ConfigError
from ..io import read_image, read_labelmap
from ..modalities import ModalityProfile, get_modality, scale_to_unit
from ..preprocessing import crop, foreground_bbox, to_model_space
from .dataset import Case
from .loading import PreparedCase, remap_label_array
from .profile_jitter import blended_bounds, jitter_fraction
from .sampling import ModalitySampler, extract_patch
from .tissues import CT_ARTERIAL_GAIN, CT_HU, MR_SIGNAL, generation_ids, intensity_classes, tissue_of

CT_LIKE = ("CT", "CBCT")
MR_WEIGHTINGS = tuple(MR_SIGNAL)
RANDOM_MR_SHARE = 0.25  # share of MR samples with fully random structure means (SynthSeg's prior)
SLAB_SHARE = 0.25  # share of samples cut to a slab of 10 to 40 slices
NARROW_FOV_SHARE = 0.15  # share of samples with a narrowed in-plane field of view
DEFAULT_SCALE = 0.15  # random scaling of the label patch: a factor in 1 +- 0.15 per axis
SLICE_AXIS_P = (0.6, 0.25, 0.15)  # slice axis z (axial), y (coronal), x (sagittal); array order z, y, x
GENERATORS = (1, 2)  # see the module docstring
DEFAULT_GENERATOR = 1  # a recipe without "generator" reproduces what older recipes drew
VOLUME_SAMPLE = 20000  # voxels of the source drawn to find a generator-2 item's normalisation bounds
VOLUME_STREAM = 7  # the random stream of that sample (apart from the item's own draws)
TEXTURE_STREAM = 11  # the stream of the real texture's gain (no other draw of an item moves with it)
TEXTURE_CLIP = 3.0  # a voxel's z-score within its structure is kept within +- this
TEXTURE_GAIN = (1.0, 3.0)  # the texture's amplitude: this many times the structure's drawn spread


@dataclass
class SynthSource:
    """A generation label map in model space: ``structures`` (uint8 generation ids), ``label`` (the
    model's labels), the source's modality and, for a CT source, each structure's measured HU and,
    for a real CT source, its image in HU (``hu``, for real texture: :func:`textured`)."""

    name: str
    modality: str
    structures: np.ndarray
    label: np.ndarray
    measured_hu: dict[int, tuple[float, float]] = field(default_factory=dict)
    hu: np.ndarray | None = None

    def as_case(self) -> PreparedCase:
        """The source as a sampler case: patch centres are drawn from ``label`` as for real cases."""
        return PreparedCase(self.name, self.modality, self.structures, self.label)


def prepare_source(
    case: Case, spacing: Sequence[float], label_values: Sequence[int], profile: ModalityProfile | None = None,
    organ_ids: dict[int, int] | None = None,
) -> SynthSource:
    """Read a labelled case and build its generation map in model space (cropped to the body, found
    on the image normalised by ``profile``, default the library's profile of its modality).

    The case's label file is read twice over: raw (every structure it holds) for generation, and
    through its remap table for the model's labels. ``organ_ids`` (generator 2, model label value ->
    generation id): the voxels of each model label take that id, whatever the file numbers them.
    """
    if case.label is None:
        raise ConfigError(f"{case.image}: a synthesis source needs a label map; give the case a label.")
    image = read_image(case.image)
    raw = read_labelmap(case.label, reference=image)
    if int(raw.array.max()) >= 200 or int(raw.array.min()) < 0:
        raise ConfigError(f"{case.label}: synthesis takes label ids 0 to 199; remap the file's ids first.")
    model_image = to_model_space(image, spacing)
    raw_model = to_model_space(raw, spacing, is_label=True)
    structures = raw_model.array.astype(np.uint8)
    hu = model_image.array.astype(np.float32)
    modality = get_modality(case.modality).name
    structures = np.where(structures > 0, structures, intensity_classes(hu, structures == 0, modality))
    target = remap_label_array(raw_model.array, case.label_remap, label_values, str(case.label))
    if organ_ids:
        lut = np.zeros(256, dtype=np.uint8)
        for value, gen_id in organ_ids.items():
            lut[value] = gen_id
        structures = np.where(target > 0, lut[target], structures).astype(np.uint8)
    bbox = foreground_bbox((profile or get_modality(modality)).normalize(hu), threshold=0.05, margin=4)
    structures, target, hu = crop(structures, bbox), crop(target, bbox), crop(hu, bbox)
    ct_like = modality in CT_LIKE
    measured = _measured_hu(structures, hu) if ct_like else {}
    return SynthSource(case.name, modality, np.ascontiguousarray(structures), np.ascontiguousarray(target), measured,
                       np.ascontiguousarray(hu) if ct_like and case.origin == "real" else None)


def _measured_hu(structures: np.ndarray, hu: np.ndarray) -> dict[int, tuple[float, float]]:
    """Median and robust spread (IQR / 1.35) of the HU of every structure with at least 20 voxels."""
    out = {}
    for value in np.unique(structures):
        voxels = hu[structures == value]
        if voxels.size >= 20:
            q25, q50, q75 = np.percentile(voxels, [25, 50, 75])
            out[int(value)] = (float(q50), float(max((q75 - q25) / 1.35, 2.0)))
    return out


# --------------------------------------------------------------------------- intensities


def draw_intensities(structures: np.ndarray, modality: str, rng: np.random.Generator,
                     measured_hu: dict[int, tuple[float, float]] | None = None,
                     weighting: str | None = None, arterial_share: float = 0.0,
                     random_share: float = RANDOM_MR_SHARE) -> tuple[np.ndarray, str]:
    """A Gaussian intensity per structure (Sec. 3.1 of SynthSeg): :func:`draw_means` for the
    structures of ``structures``, then :func:`paint`. Returns the image and the contrast drawn."""
    means, spreads, contrast = draw_means(np.unique(structures), modality, rng, measured_hu, weighting, arterial_share, random_share)
    return paint(structures, means, spreads, modality, rng), contrast


def paint(structures: np.ndarray, means: np.ndarray, spreads: np.ndarray, modality: str,
          rng: np.random.Generator) -> np.ndarray:
    """Each voxel drawn from its structure's Gaussian (float32; MR clipped at 0)."""
    image = means[structures] + spreads[structures] * rng.standard_normal(structures.shape, dtype=np.float32)
    if modality not in CT_LIKE:
        np.clip(image, 0.0, None, out=image)
    return image.astype(np.float32)


def textured(structures: np.ndarray, hu: np.ndarray, measured_hu: dict[int, tuple[float, float]],
             means: np.ndarray, spreads: np.ndarray, gain: float, painted: np.ndarray) -> np.ndarray:
    """A drawn image with the texture of a real CT: a voxel of a measured structure ``i`` (id above 0)
    gets ``means[i] + gain * spreads[i] * z``, ``z`` its HU's distance from the structure's median in
    robust spreads (:func:`_measured_hu`), clipped to :data:`TEXTURE_CLIP`; other voxels keep
    ``painted`` (so do voxels that the deformation brings from beyond the source: their structure is 0;
    along that edge the linearly resampled HU blends with 0 and its z-score sits at the clip).
    MR intensities stay at 0 or above."""
    median = np.zeros(256, dtype=np.float32)
    spread = np.ones(256, dtype=np.float32)
    known = np.zeros(256, dtype=bool)
    for i, (m, s) in measured_hu.items():
        if i > 0:
            median[i], spread[i], known[i] = m, s, True
    z = np.clip((hu - median[structures]) / spread[structures], -TEXTURE_CLIP, TEXTURE_CLIP)
    image = np.where(known[structures], means[structures] + np.float32(gain) * spreads[structures] * z, painted)
    return np.clip(image, 0.0, None).astype(np.float32)


def draw_means(ids: np.ndarray, modality: str, rng: np.random.Generator,
               measured_hu: dict[int, tuple[float, float]] | None = None,
               weighting: str | None = None, arterial_share: float = 0.0,
               random_share: float = RANDOM_MR_SHARE) -> tuple[np.ndarray, np.ndarray, str]:
    """Mean and spread (tables of 256, indexed by generation id) of the structures ``ids``: HU for
    CT-like modalities, relative signal in about [0, 1] otherwise; and the contrast drawn.
    ``weighting`` fixes the MR weighting (a key of ``MR_SIGNAL``, or ``"random"``) instead of drawing it.
    CT phases: the source's measured HU (half the draws when known), else portal-venous (60 %) or
    native; ``arterial_share`` of the draws that are not measured become arterial-phase images
    (:data:`~.tissues.CT_ARTERIAL_GAIN`). With ``arterial_share`` 0 the random draws are those of a
    sampler without the arterial phase, item for item. ``random_share`` of the MR draws take fully
    random means (SynthSeg's prior) instead of a weighting's table; the rest of the draws do not
    depend on it."""
    means = np.zeros(256, dtype=np.float32)
    spreads = np.zeros(256, dtype=np.float32)
    if modality in CT_LIKE:
        venous = rng.random() < 0.6
        use_measured = bool(measured_hu) and rng.random() < 0.5
        arterial = arterial_share > 0 and not use_measured and rng.random() < arterial_share
        contrast = "CT measured" if use_measured else (
            "CT arterial" if arterial else "CT portal-venous" if venous else "CT native")
        for i in ids:
            tissue = tissue_of(int(i))
            base, spread, enhancement = CT_HU[tissue]
            if use_measured and int(i) in measured_hu:
                base, spread = measured_hu[int(i)]
            elif arterial:
                base += rng.uniform(*CT_ARTERIAL_GAIN[tissue])
            elif venous:
                base += enhancement * rng.uniform(0.5, 1.3)
            jitter = 40.0 if tissue in ("air", "lung", "bone", "dense") else 12.0
            means[i] = base + rng.normal(0.0, jitter)
            spreads[i] = max(spread * rng.uniform(0.5, 1.5), 2.0)
    else:
        if weighting is None:
            weighting = "random" if rng.random() < random_share else str(rng.choice(MR_WEIGHTINGS))
        if weighting != "random" and weighting not in MR_SIGNAL:
            raise ConfigError(f"unknown MR weighting {weighting!r}; use one of {[*MR_WEIGHTINGS, 'random']}.")
        contrast = f"MR {weighting}"
        table = MR_SIGNAL.get(weighting)
        for i in ids:
            tissue = tissue_of(int(i))
            if tissue == "air":  # outside the body MR is dark whatever the weighting
                means[i], spreads[i] = rng.uniform(0.0, 0.03), rng.uniform(0.0, 0.01)
            elif table is None:
                means[i], spreads[i] = rng.uniform(0.02, 1.0), rng.uniform(0.0, 0.08)
            else:
                means[i] = table[tissue] * rng.uniform(0.85, 1.15) + rng.normal(0.0, 0.04)
                spreads[i] = rng.uniform(0.01, 0.06)
    return means, spreads, contrast


# --------------------------------------------------------------------------- acquisition


@dataclass(frozen=True)
class Acquisition:
    """A simulated acquisition in model space: the slice axis (array order z, y, x), the spacing
    in mm per array axis, and the kept slab and in-plane box (``None``: the whole patch)."""

    slice_axis: int
    spacing_mm: tuple[float, float, float]
    slab: tuple[int, int] | None
    box: tuple[tuple[int, int], tuple[int, int]] | None


def draw_acquisition(shape: Sequence[int], rng: np.random.Generator) -> Acquisition:
    """Random slice axis, slice thickness 1-7 mm, in-plane spacing 0.6-4.5 mm, sometimes a slab of
    10 to 40 slices (placed so that it crosses the patch centre) or a narrowed in-plane box."""
    axis = int(rng.choice(3, p=SLICE_AXIS_P))
    thickness = rng.uniform(1.0, 7.0)
    inplane = rng.uniform(0.6, 4.5)
    spacing = tuple(thickness if a == axis else inplane for a in range(3))
    slab = None
    if rng.random() < SLAB_SHARE:
        n_slices = int(rng.integers(10, 41))
        slab = (n_slices, int(rng.integers(0, 1 << 30)))
    box = None
    if rng.random() < NARROW_FOV_SHARE:
        box = tuple((int(rng.integers(0, 1 << 30)), int(rng.integers(0, 1 << 30))) for _ in range(2))
    return Acquisition(axis, spacing, slab, box)


def simulate_acquisition(image: np.ndarray, label: np.ndarray, acq: Acquisition, model_spacing: Sequence[float],
                         background: float) -> tuple[np.ndarray, np.ndarray]:
    """Degrade ``image`` (array order z, y, x, on the model grid) to ``acq``'s resolution and field
    of view. Along every axis coarser than the model grid: a Gaussian blur of the acquisition's
    slice profile (FWHM = its spacing), linear down-sampling to that spacing and back. Outside the
    slab or box the image is ``background`` and the label 0 (nothing was acquired there)."""
    out = image
    spacing_zyx = tuple(float(s) for s in reversed(model_spacing))
    for axis, (acq_mm, model_mm) in enumerate(zip(acq.spacing_mm, spacing_zyx, strict=True)):
        ratio = acq_mm / model_mm
        if ratio <= 1.05 or out.shape[axis] < 4:
            continue
        out = ndimage.gaussian_filter1d(out, sigma=ratio / 2.355, axis=axis, mode="nearest")
        n = out.shape[axis]
        coarse = max(2, int(round(n / ratio)))
        zoom_down = [1.0] * 3
        zoom_down[axis] = coarse / n
        small = ndimage.zoom(out, zoom_down, order=1, mode="nearest", grid_mode=True)
        zoom_up = [1.0] * 3
        zoom_up[axis] = n / small.shape[axis]
        out = ndimage.zoom(small, zoom_up, order=1, mode="nearest", grid_mode=True)
        out = _fit(out, image.shape)
    keep = np.ones(image.shape, dtype=bool)
    if acq.slab is not None:
        n_slices, offset_seed = acq.slab
        axis = acq.slice_axis
        n = image.shape[axis]
        extent = max(1, int(round(n_slices * acq.spacing_mm[axis] / spacing_zyx[axis])))
        if extent < n:
            centre = n // 2
            start = centre - extent + 1 + offset_seed % extent
            mask = np.zeros(n, dtype=bool)
            mask[max(start, 0): max(start + extent, 0)] = True
            index = [None] * 3
            index[axis] = slice(None)
            keep &= mask[tuple(index)]
    if acq.box is not None:
        axes = [a for a in range(3) if a != acq.slice_axis]
        for axis, (size_seed, offset_seed) in zip(axes, acq.box, strict=True):
            n = image.shape[axis]
            width = n // 2 + size_seed % (n - n // 2 + 1)
            start = max(0, min(n // 2 - offset_seed % max(width, 1), n - width))
            mask = np.zeros(n, dtype=bool)
            mask[start: start + width] = True
            index = [None] * 3
            index[axis] = slice(None)
            keep &= mask[tuple(index)]
    out = np.where(keep, out, np.float32(background)).astype(np.float32)
    return out, np.where(keep, label, 0).astype(label.dtype)


def _fit(array: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """``array`` cropped or edge-padded to ``shape`` (zoom may be off by a voxel)."""
    index = tuple(slice(0, min(a, s)) for a, s in zip(array.shape, shape, strict=True))
    out = array[index]
    pad = [(0, s - o) for o, s in zip(out.shape, shape, strict=True)]
    return np.pad(out, pad, mode="edge") if any(p for _, p in pad) else out


# --------------------------------------------------------------------------- sampler


def spatial_transform(scale: float = DEFAULT_SCALE, with_hu: bool = False) -> Rand3DElasticd:
    """Affine (rotation mostly in the axial plane, scaling by a factor in ``1 +- scale`` per axis,
    shearing) and elastic deformation of the label patch, nearest-neighbour; ``with_hu``: the
    source's HU patch too (``"hu"``, linear), deformed by the same draw. No left-right flips: they
    would swap the kidneys."""
    return Rand3DElasticd(
        ("structures", "label", "hu") if with_hu else ("structures", "label"),
        sigma_range=(5.0, 8.0),
        magnitude_range=(0.0, 120.0),
        prob=0.8,
        rotate_range=(0.3, 0.1, 0.1),
        shear_range=(0.05, 0.05, 0.05),
        scale_range=(scale, scale, scale),
        mode=("nearest", "nearest", "bilinear") if with_hu else "nearest",
        padding_mode="zeros",
    )


DEFAULT_GAMMA: dict[str, tuple[float, float] | float] = {"range": (0.7, 1.5), "prob": 0.5}


def recipe_options(synthesis: dict, modality: str) -> dict:
    """The :class:`SynthSampler` keywords a recipe's ``synthesis`` block sets for ``modality``
    (see :class:`~..training.config.TrainConfig`); keys it leaves out keep the defaults."""
    options: dict = {"gamma": synthesis.get("gamma", {}).get(modality)}
    for key in ("ct_arterial_share", "mr_random_share", "scale"):
        if key in synthesis:
            options[key] = float(synthesis[key])
    if "generator" in synthesis:
        options["generator"] = recipe_generator(synthesis)
    return options


def recipe_generator(synthesis: dict) -> int:
    """The generator a recipe's ``synthesis`` block names (:data:`DEFAULT_GENERATOR` when it names none)."""
    return int(synthesis.get("generator", DEFAULT_GENERATOR))


def source_organ_ids(generator: int, labels) -> dict[int, int] | None:
    """The ``organ_ids`` :func:`prepare_source` takes under ``generator`` for a model's ``labels``."""
    return generation_ids(labels) if generator >= 2 else None


class SynthSampler(ModalitySampler):
    """Patches of ``modality`` synthesised from label-map sources (see the module docstring).

    Stateless like :class:`~.sampling.ModalitySampler`: an item is a function of its seed only.
    Patch centres are class-balanced on the model's labels of the sources.
    """

    def __init__(
        self,
        sources: Sequence[SynthSource],
        modality: str,
        patch_size: Sequence[int],
        batch_size: int,
        spacing: Sequence[float],
        foreground_ratio: float = 0.67,
        seed: int = 0,
        stream: int = 0,
        ct_arterial_share: float = 0.0,
        profile: ModalityProfile | None = None,
        gamma: dict | None = None,
        mr_random_share: float = RANDOM_MR_SHARE,
        scale: float = DEFAULT_SCALE,
        generator: int = DEFAULT_GENERATOR,
        jitter: float = 0.0,
        polarity: float = 0.0,
        texture: bool = False,
    ) -> None:
        if not sources:
            raise ConfigError("synthesis needs at least one labelled source case.")
        if texture and (get_modality(modality).name in CT_LIKE or any(s.hu is None or not s.measured_hu for s in sources)):
            raise ConfigError(f"textured {modality} items need an MR-like modality and real CT sources with their HU "
                              f"(got {[s.name for s in sources]}); give the \"textured\" kind to an MR-like mix only.")
        if generator not in GENERATORS:
            raise ConfigError(f"synthesis generator {generator!r}: use one of {list(GENERATORS)}.")
        self.generator = int(generator)
        self.ct_arterial_share = float(ct_arterial_share)
        self.mr_random_share = float(mr_random_share)
        self.texture = bool(texture)
        self._counts: dict[int, np.ndarray] = {}  # voxels per generation id of each source (generator 2)
        self.sources = list(sources)
        super().__init__([s.as_case() for s in self.sources], patch_size, batch_size, foreground_ratio, True, seed, stream,
                         jitter, polarity)
        self.modality = get_modality(modality).name
        self.profile = profile or get_modality(self.modality)  # the run's profile (a fine-tune keeps its parent's)
        self.spacing = tuple(float(s) for s in spacing)
        self.spatial = spatial_transform(float(scale))
        self.spatial_hu = spatial_transform(float(scale), with_hu=True)
        self.bias = RandBiasFieldd("image", degree=3, coeff_range=(0.0, 0.4), prob=0.7)
        self.noise = RandGaussianNoised("image", prob=0.5, std=0.03)
        gamma = {**DEFAULT_GAMMA, **(gamma or {})}
        self.gamma = RandAdjustContrastd("image", gamma=tuple(float(g) for g in gamma["range"]), prob=float(gamma["prob"]))

    def synthesize(self, index: int, center: Sequence[int], seed: int) -> tuple[np.ndarray, np.ndarray, str]:
        """The normalised image, the label patch and the contrast drawn, for one item."""
        source = self.sources[index]
        rng = np.random.default_rng(seed)
        ct_like = self.modality in CT_LIKE
        texture_gain = self.texture_gain(seed)
        item = {
            "structures": extract_patch(source.structures, center, self.patch_size)[None].astype(np.float32),
            "label": extract_patch(source.label, center, self.patch_size)[None].astype(np.float32),
        }
        spatial = self.spatial
        if texture_gain:
            item["hu"] = extract_patch(source.hu, center, self.patch_size)[None].astype(np.float32)
            spatial = self.spatial_hu
        spatial.set_random_state(seed=seed)
        item = spatial(item)
        structures = np.rint(np.asarray(item["structures"][0])).astype(np.uint8)
        label = np.rint(np.asarray(item["label"][0])).astype(np.uint8)
        measured = source.measured_hu if source.modality in CT_LIKE else None
        present = np.unique(structures)
        means, spreads, contrast = draw_means(present, self.modality, rng, measured,
                                              arterial_share=self.ct_arterial_share, random_share=self.mr_random_share)
        image = paint(structures, means, spreads, self.modality, rng)
        if texture_gain:
            image = textured(structures, np.asarray(item["hu"][0], dtype=np.float32), source.measured_hu, means, spreads,
                             texture_gain, image)
        image = ndimage.gaussian_filter(image, sigma=rng.uniform(0.0, 0.8))
        gains: np.ndarray | float = 1.0
        if not ct_like:
            self.bias.set_random_state(seed=seed + 1)
            image = np.asarray(self.bias({"image": image[None]})["image"][0], dtype=np.float32)
            gain = np.float32(rng.uniform(0.5, 2000.0))  # arbitrary MR units: the profile must not care
            image *= gain
            if self.generator >= 2:  # the bias field itself (the same draw, on ones), for the whole-source scale
                self.bias.set_random_state(seed=seed + 1)
                gains = gain * np.asarray(self.bias({"image": np.ones((1, *image.shape), np.float32)})["image"][0])
        else:
            image = image + rng.normal(0.0, rng.uniform(3.0, 25.0), image.shape).astype(np.float32)
        background = CT_HU["air"][0] if ct_like else 0.0
        image, label = simulate_acquisition(image, label, draw_acquisition(image.shape, rng), self.spacing, background)
        percentile = self.profile.kind != "window"  # a window's bounds do not depend on the image
        t = jitter_fraction(seed, self.jitter) if percentile else 0.0
        sample = (self.whole_source(index, present, means, spreads, contrast, measured, seed, gains)
                  if self.generator >= 2 and percentile else image)
        image = self.profile.compress(scale_to_unit(image, *blended_bounds(self.profile, sample, t)))
        item = {"image": image[None]}
        self.noise.set_random_state(seed=seed + 2)
        self.gamma.set_random_state(seed=seed + 3)
        item = self.gamma(self.noise(item))
        image = np.clip(np.asarray(item["image"][0], dtype=np.float32), 0.0, 1.0)
        return image, label, contrast

    def texture_gain(self, seed: int) -> float:
        """The real texture's gain for this item (:data:`TEXTURE_GAIN`), 0 for a painted sampler; drawn
        from stream :data:`TEXTURE_STREAM`, so that a textured item draws everything else as the same
        item painted."""
        if not self.texture:
            return 0.0
        return float(np.random.default_rng([seed, TEXTURE_STREAM]).uniform(*TEXTURE_GAIN))

    def whole_source(self, index: int, present: np.ndarray, means: np.ndarray, spreads: np.ndarray, contrast: str,
                     measured: dict | None, seed: int, gains: np.ndarray | float = 1.0) -> np.ndarray:
        """A sample of :data:`VOLUME_SAMPLE` voxels of source ``index`` as this item draws it: each
        structure with the item's mean and spread; the structures the patch lacks drawn (same
        contrast) from the item's stream :data:`VOLUME_STREAM`, which no other draw uses; each voxel
        times ``gains`` (a number, or values drawn from an array: the item's gain times bias field)."""
        counts = self._counts.get(index)
        if counts is None:
            counts = self._counts[index] = np.bincount(self.sources[index].structures.ravel(), minlength=256).astype(np.float64)
        rng = np.random.default_rng([seed, VOLUME_STREAM])
        missing = np.setdiff1d(np.flatnonzero(counts), present)
        if missing.size:
            weighting = contrast.split(" ", 1)[1] if contrast.startswith("MR ") else None
            extra_means, extra_spreads, _ = draw_means(missing, self.modality, rng, measured, weighting=weighting,
                                                       arterial_share=self.ct_arterial_share, random_share=self.mr_random_share)
            means, spreads = means.copy(), spreads.copy()
            means[missing], spreads[missing] = extra_means[missing], extra_spreads[missing]
        ids = rng.choice(256, size=VOLUME_SAMPLE, p=counts / counts.sum()).astype(np.uint8)
        sample = paint(ids, means, spreads, self.modality, rng)
        if np.ndim(gains):
            return sample * rng.choice(np.ravel(gains), size=VOLUME_SAMPLE).astype(np.float32)
        return sample * np.float32(gains)

    def make(self, index: int, center: tuple[int, ...], seed: int | None) -> dict[str, torch.Tensor]:
        image, label, _ = self.synthesize(index, center, 0 if seed is None else seed)
        return self.finish({"image": image[None], "label": label[None].astype(np.float32)}, seed)


class MixedSampler:
    """One modality's batches mixed from several samplers (e.g. real, synthetic, phantom patches):
    each item first draws its kind with the given probabilities, then its own choices. Stateless:
    the items of step ``s`` are a function of ``(seed, stream, s)``."""

    def __init__(self, samplers: dict[str, ModalitySampler], shares: dict[str, float], batch_size: int,
                 seed: int = 0, stream: int = 0) -> None:
        kinds = [k for k, share in shares.items() if share > 0]
        missing = [k for k in kinds if k not in samplers]
        if missing:
            raise ConfigError(f"the synthesis mix asks for {missing} batches but there are no such cases; "
                              f"available: {sorted(samplers)}.")
        if not kinds:
            raise ConfigError("the synthesis mix gives no kind a positive share.")
        self.kinds = kinds
        self.samplers = samplers
        weights = np.array([shares[k] for k in kinds], dtype=np.float64)
        self.probabilities = weights / weights.sum()
        self.batch_size = batch_size
        self.seed, self.stream = seed, stream
        self.cases = [c for k in kinds for c in samplers[k].cases]
        self.modality = next(iter(samplers.values())).modality

    def draw(self, rng: np.random.Generator) -> tuple[str, tuple]:
        kind = self.kinds[int(rng.choice(len(self.kinds), p=self.probabilities))]
        return kind, self.samplers[kind].draw(rng)

    def items(self, step: int, positions: Sequence[int] | None = None) -> list[dict[str, torch.Tensor]]:
        rng = np.random.default_rng([self.seed, self.stream, step])
        draws = [self.draw(rng) for _ in range(self.batch_size)]
        chosen = range(self.batch_size) if positions is None else positions
        return [self.samplers[draws[i][0]].make(*draws[i][1]) for i in chosen]

    def batch(self, step: int, positions: Sequence[int] | None = None) -> dict[str, torch.Tensor]:
        items = self.items(step, positions)
        return {k: torch.stack([it[k] for it in items]) for k in items[0]}
