"""Training items normalised between the two foreground choices of a percentile profile."""

import numpy as np
import pytest
import torch
from conftest import SAMPLES

from MultiModalSegLib.data.dataset import load_dataset
from MultiModalSegLib.data.loading import PreparedCase, prepare_case
from MultiModalSegLib.data.profile_jitter import (
    blended_bounds,
    blended_normaliser,
    check_normalisation_ensemble,
    jitter_fraction,
    jitter_normalised,
    normalize_blended,
    other_foreground,
    unit_alternate,
)
from MultiModalSegLib.data.sampling import ModalitySampler
from MultiModalSegLib.data.synthesis import SynthSampler, prepare_source
from MultiModalSegLib.errors import ConfigError, InputError
from MultiModalSegLib.io import Volume, read_image
from MultiModalSegLib.modalities import CT, MR, ModalityProfile
from MultiModalSegLib.preprocessing import crop, foreground_bbox, to_model_space

SPACING = [6.0, 6.0, 6.0]
PATCH = [16, 32, 32]


def fat_dominated_mr(seed: int = 0) -> np.ndarray:
    """Air (0), organs (about 300) and a bright fat layer (about 1000): the mean lies above the organs."""
    rng = np.random.default_rng(seed)
    image = np.zeros((24, 40, 40), np.float32)
    image[:, 4:36, 4:36] = 1000.0  # fat
    image[:, 12:28, 12:28] = 300.0  # organs
    return image + rng.normal(0.0, 20.0, image.shape).astype(np.float32).clip(-60, 60)


def test_the_fraction_is_drawn_from_the_item_seed_for_the_share_asked():
    assert jitter_fraction(None, 1.0) == 0.0 and jitter_fraction(5, 0.0) == 0.0
    fractions = np.array([jitter_fraction(seed, 0.75) for seed in range(4000)])
    assert abs(float(np.mean(fractions > 0)) - 0.75) < 0.03
    moved = fractions[fractions > 0]
    assert moved.min() < 0.05 and moved.max() > 0.95 and abs(float(moved.mean()) - 0.5) < 0.03  # uniform in [0, 1]
    assert [jitter_fraction(s, 0.75) for s in range(50)] == fractions[:50].tolist()  # a function of the seed


def test_blended_bounds_run_from_the_profile_to_its_other_foreground():
    image = fat_dominated_mr()
    own, other = MR.bounds(image), other_foreground(MR).bounds(image)
    assert MR.foreground == "all" and other_foreground(MR).foreground == "above_mean"
    assert other[0] > own[0] + 500  # above the mean, the organs are clipped to the value of air
    assert blended_bounds(MR, image, 0.0) == own
    assert np.allclose(blended_bounds(MR, image, 1.0), other)
    assert np.allclose(blended_bounds(MR, image, 0.25), np.add(own, np.multiply(0.25, np.subtract(other, own))))


def test_renormalising_a_normalised_image_matches_normalising_the_raw_one():
    """A prepared case holds the image on its profile's scale and the other bounds on that scale:
    re-normalising it t of the way gives what the blended bounds give the raw image."""
    image = fat_dominated_mr(1)
    unit = MR.normalize(image)
    alternate = unit_alternate(MR, image)
    low, high = MR.bounds(image)
    inside = (image >= low) & (image <= high)  # voxels the profile did not clip
    for t in (0.3, 1.0):
        expected = (image - blended_bounds(MR, image, t)[0]) / np.subtract(*blended_bounds(MR, image, t)[::-1])
        got = jitter_normalised(unit, alternate, t)
        assert np.allclose(got[inside], np.clip(expected, 0, 1)[inside], atol=1e-5)
    assert jitter_normalised(unit, alternate, 0.0) is unit


def test_blended_normalisation_runs_from_the_profile_to_its_other_foreground():
    image = fat_dominated_mr(2)
    assert np.array_equal(normalize_blended(MR, image, 0.0), MR.normalize(image))
    assert np.allclose(normalize_blended(MR, image, 1.0), other_foreground(MR).normalize(image), atol=1e-6)
    organs = [normalize_blended(MR, image, t)[:, 14:26, 14:26].mean() for t in (0.0, 0.2, 1.0)]
    assert organs[0] > organs[1] > organs[2] == 0.0  # about 300, between air and fat: darker as the low bound nears the fat


def test_one_normaliser_gives_every_fraction_from_one_percentile_pass_per_foreground(monkeypatch):
    """The passes of a normalisation ensemble: what ``normalize_blended`` gives at each fraction, bit for bit,
    with each foreground choice's percentiles taken once."""
    image = fat_dominated_mr(3).astype(np.float64)
    expected = {t: normalize_blended(MR, image, t) for t in (0.0, 0.5, 1.0)}
    calls = []
    original = ModalityProfile.bounds
    monkeypatch.setattr(ModalityProfile, "bounds", lambda profile, a: calls.append(profile.foreground) or original(profile, a))
    normalise = blended_normaliser(MR, image)
    for t in (0.0, 0.5, 1.0, 0.5):
        got = normalise(t)
        assert got.dtype == np.float32 and np.array_equal(got, expected[t])
    assert sorted(calls) == ["above_mean", "all"]


def test_a_window_profile_has_nothing_to_jitter():
    assert unit_alternate(CT, fat_dominated_mr()) is None
    with pytest.raises(ConfigError, match="nothing to jitter"):
        other_foreground(CT)
    assert unit_alternate(MR, np.full((4, 4, 4), 7.0, np.float32)) is None  # a flat image has no scale


def test_jitter_and_a_log_compression_are_not_combined():
    from MultiModalSegLib.data.profile_jitter import check_profile_jitter
    from MultiModalSegLib.modalities import with_params

    curved = with_params(MR, {"log_compression": 30})
    assert check_profile_jitter({"MR": 0.5}, ["MR"], {"MR": MR}) == {"MR": 0.5}
    with pytest.raises(ConfigError, match="log_compression"):
        check_profile_jitter({"MR": 0.5}, ["MR"], {"MR": curved})


def test_prepared_cases_carry_their_other_bounds():
    cases = {c.modality: c for c in load_dataset(SAMPLES / "dataset.json").cases("training")}
    mr = prepare_case(cases["MR"], SPACING, [1, 2, 3, 4])
    assert mr.alternate is not None and mr.alternate[0] > 0.0  # the organs' side of the other choice
    assert prepare_case(cases["CT"], SPACING, [1, 2, 3, 4]).alternate is None


def test_a_case_prepared_for_a_normalisation_ensemble_keeps_every_pass_in_the_first_crop():
    """The first fraction's image is the one prepared without the ensemble; each further pass is the
    image normalised at its fraction before resampling (as the Segmenter runs it), cropped alike."""
    mr = {c.modality: c for c in load_dataset(SAMPLES / "dataset.json").cases("training")}["MR"]
    plain = prepare_case(mr, SPACING, [1, 2, 3, 4])
    ensemble = prepare_case(mr, SPACING, [1, 2, 3, 4], fractions=(0.0, 0.5, 1.0))
    assert plain.passes == () and np.array_equal(ensemble.image, plain.image) and np.array_equal(ensemble.label, plain.label)
    assert len(ensemble.passes) == 2 and all(p.shape == plain.image.shape for p in ensemble.passes)
    raw = read_image(mr.image)
    bbox = foreground_bbox(to_model_space(Volume(MR.normalize(raw.array), raw.spacing, raw.origin, raw.direction), SPACING).array,
                           threshold=0.05, margin=4)
    for t, image in zip((0.5, 1.0), ensemble.passes, strict=True):
        normalised = Volume(normalize_blended(MR, raw.array, t), raw.spacing, raw.origin, raw.direction)
        assert np.array_equal(image, crop(to_model_space(normalised, SPACING).array, bbox))
        assert not np.array_equal(image, plain.image)


def test_a_recipe_normalisation_ensemble_is_read_or_refused_in_one_sentence():
    profiles = {"CT": CT, "MR": MR}
    assert check_normalisation_ensemble({"mr": [0, 0.5, 1]}, ["CT", "MR"], profiles) == {"MR": (0.0, 0.5, 1.0)}
    assert check_normalisation_ensemble({}, ["CT", "MR"], profiles) == {}
    for block, match in (({"CT": [0, 1]}, "does not depend on the image"), ({"MR": [0]}, "two or more different"),
                         ({"MR": [0, 0]}, "two or more different"), ({"MR": [0, 1.5]}, "two or more different"),
                         ({"MR": [0, True]}, "two or more different"), ({"MR": 0.5}, "two or more different"),
                         ([0, 1], "must be")):
        with pytest.raises(ConfigError, match=match):
            check_normalisation_ensemble(block, ["CT", "MR"], profiles)
    with pytest.raises(InputError, match="unknown modality 'PET'"):
        check_normalisation_ensemble({"PET": [0, 1]}, ["CT", "MR"], profiles)
    with pytest.raises(ConfigError, match="does not train"):
        check_normalisation_ensemble({"MR": [0, 1]}, ["CT"], {"CT": CT})


def _mr_case(alternate=(0.3, 1.2)) -> PreparedCase:
    image = np.random.default_rng(3).random((24, 24, 24), dtype=np.float32)
    label = np.zeros(image.shape, np.uint8)
    label[8:16, 8:16, 8:16] = 1
    return PreparedCase("mr", "MR", image, label, 1.0, alternate)


def test_a_sampler_without_jitter_draws_what_it_drew_before():
    plain = ModalitySampler([_mr_case()], (8, 8, 8), 3, seed=2).batch(4)
    zero = ModalitySampler([_mr_case()], (8, 8, 8), 3, seed=2, jitter=0.0).batch(4)
    moved = ModalitySampler([_mr_case()], (8, 8, 8), 3, seed=2, jitter=1.0).batch(4)
    assert torch.equal(plain["image"], zero["image"]) and torch.equal(plain["label"], zero["label"])
    assert torch.equal(plain["label"], moved["label"])  # the same patches and augmentations
    assert not torch.equal(plain["image"], moved["image"])
    assert float(moved["image"].min()) >= 0.0 and float(moved["image"].max()) <= 1.0
    unaugmented = ModalitySampler([_mr_case()], (8, 8, 8), 3, augment=False, jitter=1.0).batch(4)
    assert torch.equal(unaugmented["image"], ModalitySampler([_mr_case()], (8, 8, 8), 3, augment=False).batch(4)["image"])


def test_synthesised_items_change_only_their_normalisation():
    case = next(c for c in load_dataset(SAMPLES / "dataset.json").cases("training") if c.modality == "CT")
    source = prepare_source(case, SPACING, [1, 2, 3, 4])
    for generator in (1, 2):
        kw = {"seed": 5, "gamma": {"prob": 0.0}, "generator": generator}
        plain = SynthSampler([source], "MR", PATCH, 1, SPACING, **kw)
        zero = SynthSampler([source], "MR", PATCH, 1, SPACING, jitter=0.0, **kw)
        moved = SynthSampler([source], "MR", PATCH, 1, SPACING, jitter=1.0, **kw)
        rng = np.random.default_rng([5, 1])
        differ = 0
        for _ in range(4):
            draw = plain.draw(rng)
            image, label, contrast = plain.synthesize(*draw)
            image_0, label_0, _ = zero.synthesize(*draw)
            image_1, label_1, contrast_1 = moved.synthesize(*draw)
            assert np.array_equal(image, image_0) and np.array_equal(label, label_0)
            assert np.array_equal(label, label_1) and contrast == contrast_1
            assert 0.0 <= image_1.min() and image_1.max() <= 1.0
            differ += not np.allclose(image, image_1, atol=0.02)
        assert differ >= 3, generator
    ct = SynthSampler([source], "CT", PATCH, 1, SPACING, seed=5, jitter=1.0)
    assert np.array_equal(ct.batch(2)["image"], SynthSampler([source], "CT", PATCH, 1, SPACING, seed=5).batch(2)["image"])
