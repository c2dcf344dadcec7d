"""Training items normalised with bounds drawn between the two foreground choices of a percentile profile.

A ``percentile`` profile (MR) maps a scan to [0, 1] by percentiles of its voxels, and where those
percentiles fall depends on the scan: how much fat, air and field of view it holds. On a
fat-dominated T1-weighted abdomen, the percentiles of all voxels put the liver, spleen and kidneys
near 0 with fat near 1, those of the voxels above the mean clip them to 0; another scan of other
proportions lands elsewhere between the two. A network trained under one choice alone meets real
scans under bounds it never saw (measured: ``training/reports/abdomen-synth-v12/mr_intensity_probe.md``).

With a recipe's ``"profile_jitter": {"MR": share}``, that share of a modality's training items is
normalised with bounds a random fraction ``t`` (uniform in [0, 1]) of the way from the profile's
own bounds to those of its other foreground choice (:data:`..modalities.FOREGROUNDS`); the other
items, and inference, use the profile's own. This is an intensity augmentation in the spirit of
SynthSeg's (Billot et al., Medical Image Analysis 86, 2023, Sec. 3.1: randomise what the network must
not depend on), applied to the normalisation, which SynthSeg leaves fixed; the choice of the two
foreground choices as the ends is ours.

``t`` is drawn from the item's own seed on a stream of its own (:data:`JITTER_STREAM`), so no other
random draw of the item changes and a resumed run draws the same items.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from ..modalities import FOREGROUNDS, ModalityProfile, scale_to_unit, with_params
from .recipe_shares import modality_entries, modality_shares

JITTER_STREAM = 11  # the random stream of an item's jitter fraction (apart from the item's other draws)


def other_foreground(profile: ModalityProfile) -> ModalityProfile:
    """``profile`` with its other foreground choice (a ``percentile`` profile only)."""
    if profile.kind != "percentile":
        raise ConfigError(f"modality {profile.name!r} has a {profile.kind} profile: its bounds do not depend on "
                          "the image, so there is nothing to jitter; remove it from \"profile_jitter\".")
    return with_params(profile, {"foreground": next(f for f in FOREGROUNDS if f != profile.foreground)})


def jitter_fraction(seed: int | None, share: float) -> float:
    """How far (0 to 1) item ``seed``'s bounds move toward the other foreground's: 0 for ``1 - share``
    of the items (and for an item without a seed), uniform in [0, 1] for the rest."""
    if seed is None or share <= 0.0:
        return 0.0
    rng = np.random.default_rng([seed, JITTER_STREAM])
    return float(rng.uniform()) if rng.random() < share else 0.0


def blended_bounds(profile: ModalityProfile, sample: np.ndarray, t: float) -> tuple[float, float]:
    """The bounds ``t`` of the way from ``profile``'s bounds for ``sample`` to its other foreground's."""
    return BlendedNormaliser(profile, sample).bounds(t)


class BlendedNormaliser:
    """One image normalised as ``profile`` does, at any fraction ``t`` of the way to the bounds of its other
    foreground choice (:func:`blended_bounds`); each choice's bounds (percentiles of the whole image) are
    taken once, however many fractions are asked for: the passes of a normalisation ensemble."""

    def __init__(self, profile: ModalityProfile, array: np.ndarray) -> None:
        self.profile = profile
        self.data = array
        self._own: tuple[float, float] | None = None
        self._other: tuple[float, float] | None = None

    def bounds(self, t: float) -> tuple[float, float]:
        """The bounds at fraction ``t`` (the profile's own at 0)."""
        if self._own is None:
            self._own = self.profile.bounds(self.data)
        if t == 0.0:
            return self._own
        if self._other is None:
            self._other = other_foreground(self.profile).bounds(self.data)
        (low, high), (other_low, other_high) = self._own, self._other
        return low + t * (other_low - low), high + t * (other_high - high)

    def __call__(self, t: float) -> np.ndarray:
        """The image normalised with :meth:`bounds` ``(t)``."""
        return self.profile.compress(scale_to_unit(self.data, *self.bounds(t)))


def normalize_blended(profile: ModalityProfile, array: np.ndarray, t: float) -> np.ndarray:
    """``array`` normalised as ``profile`` does, with the bounds ``t`` of the way to its other foreground's
    (:func:`blended_bounds`); ``profile.normalize(array)`` for ``t == 0``. What an item with jitter fraction
    ``t`` is normalised with in training, and each pass of a normalisation ensemble at inference
    (``inference.normalisation_ensemble``, :mod:`..inference.segmenter`; several passes of one image:
    :func:`blended_normaliser`)."""
    return blended_normaliser(profile, array)(t)


def blended_normaliser(profile: ModalityProfile, array: np.ndarray) -> BlendedNormaliser:
    """A :class:`BlendedNormaliser` of ``array`` as float32 (what :func:`normalize_blended` normalises)."""
    return BlendedNormaliser(profile, np.asarray(array, dtype=np.float32))


def unit_alternate(profile: ModalityProfile, array: np.ndarray) -> tuple[float, float] | None:
    """The other foreground's bounds for ``array`` on the scale ``profile.normalize(array)`` gives it
    (where the profile's own bounds are 0 and 1); ``None`` for a window profile or a flat image."""
    if profile.kind != "percentile":
        return None
    low, high = profile.bounds(array)
    if not high > low:
        return None
    other_low, other_high = other_foreground(profile).bounds(array)
    return (other_low - low) / (high - low), (other_high - low) / (high - low)


def jitter_normalised(image: np.ndarray, alternate: tuple[float, float] | None, t: float) -> np.ndarray:
    """An image already normalised by its profile, re-normalised ``t`` of the way to the ``alternate``
    bounds (:func:`unit_alternate`); unchanged for ``t == 0``. The profile has already clipped the image
    to [0, 1]: toward narrower bounds this is exact, toward wider ones (above the mean -> all voxels)
    every voxel the profile clipped takes one value, the clipped bound's place under the new bounds
    (synthesised items are normalised from their raw values instead, :mod:`.synthesis` step 5)."""
    if t == 0.0 or alternate is None:
        return image
    return scale_to_unit(image, t * alternate[0], 1.0 + t * (alternate[1] - 1.0))


def check_profile_jitter(jitter: dict, modalities: list[str], profiles: dict[str, ModalityProfile]) -> dict[str, float]:
    """A recipe's ``profile_jitter`` block as ``{modality: share}``; one sentence for a malformed one."""
    shares = modality_shares(jitter, "profile_jitter", modalities, profiles, zero=True)
    for modality in shares:
        other_foreground(profiles[modality])
        if profiles[modality].log_compression:
            raise ConfigError(f"\"profile_jitter\" names {modality}, whose profile has a log_compression: jitter blends "
                              "linear bounds only; remove one of the two.")
    return shares


def check_normalisation_ensemble(block: object, modalities: list[str], profiles: dict[str, ModalityProfile]) -> dict[str, tuple[float, ...]]:
    """A recipe's ``normalisation_ensemble`` block (``{"MR": [0, 0.5, 1]}``) as ``{modality: fractions}``:
    modalities the run trains, of percentile profiles, each with two or more different fractions in
    [0, 1] (what ``inference.normalisation_ensemble`` of a bundle must hold); one sentence for a malformed one."""
    named = {}
    form = "{MODALITY: [t, t, ...]} with fractions in [0, 1]"
    for modality, fractions in modality_entries(block, "normalisation_ensemble", modalities, profiles, form):
        if profiles[modality].kind != "percentile":
            raise ConfigError(f"\"normalisation_ensemble\" names {modality}, whose {profiles[modality].kind} profile does not depend "
                              "on the image: every fraction would give the same input; remove it.")
        numbers = isinstance(fractions, list) and all(isinstance(t, int | float) and not isinstance(t, bool) for t in fractions)
        if not numbers or len(fractions) < 2 or len(set(fractions)) < len(fractions) or not all(0.0 <= t <= 1.0 for t in fractions):
            raise ConfigError(f"\"normalisation_ensemble\": {modality} has {fractions!r}; give two or more different fractions "
                              "in [0, 1], e.g. [0, 0.5, 1].")
        named[modality] = tuple(float(t) for t in fractions)
    return named
