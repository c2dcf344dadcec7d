"""Images synthesised from label maps: sources, intensities, acquisitions, the mixed sampler."""

import dataclasses

import numpy as np
import pytest
from conftest import SAMPLES

from MultiModalSegLib.data.dataset import load_dataset
from MultiModalSegLib.data.sampling import ModalitySampler
from MultiModalSegLib.data.synthesis import (
    TEXTURE_GAIN,
    Acquisition,
    MixedSampler,
    SynthSampler,
    draw_intensities,
    prepare_source,
    recipe_options,
    simulate_acquisition,
    spatial_transform,
    textured,
)
from MultiModalSegLib.data.tissues import UNLABELLED_BASE, intensity_classes, tissue_of
from MultiModalSegLib.errors import ConfigError

SPACING = [6.0, 6.0, 6.0]
PATCH = [16, 32, 32]


@pytest.fixture(scope="module")
def ct_source():
    case = next(c for c in load_dataset(SAMPLES / "dataset.json").cases("training") if c.modality == "CT")
    return prepare_source(case, SPACING, [1, 2, 3, 4])


def test_source_keeps_every_structure_and_classes_the_rest(ct_source):
    ids = set(np.unique(ct_source.structures).tolist())
    assert {1, 2, 3, 5, 6, 7} <= ids  # spleen, kidneys, liver, stomach, pancreas of the full map
    assert {UNLABELLED_BASE, UNLABELLED_BASE + 1, UNLABELLED_BASE + 2} <= ids  # air, fat, soft tissue
    assert set(np.unique(ct_source.label).tolist()) == {0, 1, 2, 3, 4}
    assert ct_source.structures.shape == ct_source.label.shape
    # the model's liver is TotalSegmentator's liver, voxel for voxel
    assert np.array_equal(ct_source.label == 1, ct_source.structures == 5)
    liver_hu, _ = ct_source.measured_hu[5]
    fat_hu, _ = ct_source.measured_hu[UNLABELLED_BASE + 1]
    assert 20 < liver_hu < 200 and -200 < fat_hu < -30


def test_intensity_classes_of_ct_follow_hounsfield_bins():
    hu = np.array([-1000, -100, 40, 700], dtype=np.float32)
    classes = intensity_classes(hu, np.ones(4, bool), "CT")
    assert [tissue_of(int(c)) for c in classes] == ["air", "fat", "soft", "dense"]


def test_mr_weightings_order_tissues_as_real_scans_do(ct_source):
    rng = np.random.default_rng(0)
    s = ct_source.structures

    def mean_of(image, tissue_id):
        return float(image[s == tissue_id].mean())

    t2, _ = draw_intensities(s, "MR", rng, weighting="T2")
    assert mean_of(t2, 21) > mean_of(t2, 1) > mean_of(t2, 5)  # bladder (fluid) > spleen > liver on T2
    t1, _ = draw_intensities(s, "MR", rng, weighting="T1")
    assert mean_of(t1, UNLABELLED_BASE + 1) > mean_of(t1, 5) > mean_of(t1, 21)  # fat > liver > fluid on T1
    fat, _ = draw_intensities(s, "MR", rng, weighting="fat")
    assert mean_of(fat, UNLABELLED_BASE + 1) > 4 * mean_of(fat, 5)  # Dixon fat image: liver dark
    with pytest.raises(ConfigError, match="unknown MR weighting"):
        draw_intensities(s, "MR", rng, weighting="PD")


def test_ct_intensities_stay_near_hounsfield_units(ct_source):
    image, contrast = draw_intensities(ct_source.structures, "CT", np.random.default_rng(3), ct_source.measured_hu)
    liver = image[ct_source.structures == 5]
    assert contrast.startswith("CT") and -50 < liver.mean() < 300
    assert image[ct_source.structures == UNLABELLED_BASE].mean() < -800  # air stays air


def test_arterial_phase_orders_the_organs_as_an_arterial_ct_does(ct_source):
    """Arterial draws: kidneys and spleen far brighter than the liver, whatever the seed; with a
    share of 0 every draw is the one of a sampler without the arterial phase."""
    s = ct_source.structures
    phases = set()
    for seed in range(12):
        image, contrast = draw_intensities(s, "CT", np.random.default_rng(seed), None, arterial_share=1.0)
        assert contrast == "CT arterial"
        liver, spleen, kidney = (float(np.median(image[s == k])) for k in (5, 1, 2))
        assert kidney > liver + 40 and spleen > liver and liver < 140
        plain, p_contrast = draw_intensities(s, "CT", np.random.default_rng(seed), ct_source.measured_hu)
        same, s_contrast = draw_intensities(s, "CT", np.random.default_rng(seed), ct_source.measured_hu, arterial_share=0.0)
        assert np.array_equal(plain, same) and p_contrast == s_contrast
        phases.add(draw_intensities(s, "CT", np.random.default_rng(seed), ct_source.measured_hu, arterial_share=0.5)[1])
    assert {"CT arterial", "CT measured"} <= phases


def test_a_bad_arterial_share_is_refused():
    from MultiModalSegLib.training.config import _check_synthesis

    _check_synthesis({"mix": {"CT": {"synthetic": 1}}, "ct_arterial_share": 0.3})
    with pytest.raises(ConfigError, match="ct_arterial_share"):
        _check_synthesis({"mix": {"CT": {"synthetic": 1}}, "ct_arterial_share": 1.5})


def test_a_bad_gamma_is_refused():
    from MultiModalSegLib.training.config import _check_synthesis

    _check_synthesis({"mix": {"MR": {"synthetic": 1}}, "gamma": {"MR": {"range": [0.7, 3.0], "prob": 0.8}}})
    for bad in ({"range": [2.0, 1.0]}, {"range": [0.0, 1.0]}, {"prob": 1.5}, {"range": [1.0]}, {"low": 1}, [0.7, 3.0]):
        with pytest.raises(ConfigError, match="gamma of MR"):
            _check_synthesis({"mix": {"MR": {"synthetic": 1}}, "gamma": {"MR": bad}})


def test_mr_random_share_sets_how_often_mr_means_are_fully_random(ct_source):
    """Share 1: every MR draw random; share 0: none; the default share draws what 0.25 draws, item for item."""
    s = ct_source.structures
    contrasts = {share: [draw_intensities(s, "MR", np.random.default_rng(seed), random_share=share)[1] for seed in range(16)]
                 for share in (0.0, 0.25, 1.0)}
    assert set(contrasts[1.0]) == {"MR random"}
    assert "MR random" not in contrasts[0.0] and len(set(contrasts[0.0])) >= 4
    assert 0 < contrasts[0.25].count("MR random") < 16
    for seed in range(4):
        default = draw_intensities(s, "MR", np.random.default_rng(seed))
        quarter = draw_intensities(s, "MR", np.random.default_rng(seed), random_share=0.25)
        assert np.array_equal(default[0], quarter[0]) and default[1] == quarter[1]
    sampler = SynthSampler([ct_source], "MR", PATCH, 1, SPACING, mr_random_share=1.0)
    rng = np.random.default_rng(0)
    assert all(sampler.synthesize(*sampler.draw(rng))[2] == "MR random" for _ in range(3))


def test_scale_widens_the_random_resizing_of_the_label_patches(ct_source):
    assert spatial_transform().rand_3d_elastic.rand_affine_grid.scale_range == (0.15, 0.15, 0.15)
    assert spatial_transform(0.3).rand_3d_elastic.rand_affine_grid.scale_range == (0.3, 0.3, 0.3)

    def liver_sizes(scale):
        sampler = SynthSampler([ct_source], "CT", PATCH, 1, SPACING, seed=3, scale=scale)
        rng = np.random.default_rng(1)
        return [int((sampler.synthesize(*sampler.draw(rng))[1] == 1).sum()) for _ in range(12)]

    default, same, wide = liver_sizes(0.15), SynthSampler([ct_source], "CT", PATCH, 1, SPACING, seed=3), liver_sizes(0.3)
    rng = np.random.default_rng(1)
    assert [int((same.synthesize(*same.draw(rng))[1] == 1).sum()) for _ in range(12)] == default
    assert wide != default  # the same items, resized by other factors


def test_recipe_options_read_the_synthesis_block():
    block = {"mix": {}, "ct_arterial_share": 0.35, "mr_random_share": 0.5, "scale": 0.3, "gamma": {"MR": {"prob": 0.8}}}
    assert recipe_options(block, "MR") == {"gamma": {"prob": 0.8}, "ct_arterial_share": 0.35, "mr_random_share": 0.5, "scale": 0.3}
    assert recipe_options({"mix": {}}, "CT") == {"gamma": None}  # the sampler's defaults stand in


def test_bad_mr_random_share_and_scale_are_refused():
    from MultiModalSegLib.training.config import _check_synthesis

    _check_synthesis({"mix": {"MR": {"synthetic": 1}}, "mr_random_share": 0.5, "scale": 0.3})
    for key, bad in (("mr_random_share", 1.2), ("mr_random_share", "half"), ("scale", 1.0), ("scale", -0.1), ("scale", True)):
        with pytest.raises(ConfigError, match=key):
            _check_synthesis({"mix": {"MR": {"synthetic": 1}}, key: bad})


def test_a_gamma_above_one_darkens_the_organs_against_the_brightest_tissue(ct_source):
    """The same items (same seeds) under gamma 1 and gamma 3: organs sit lower under 3, never higher."""
    plain = SynthSampler([ct_source], "MR", PATCH, 1, SPACING, seed=2, stream=1, gamma={"range": (1.0, 1.0), "prob": 1.0})
    dark = SynthSampler([ct_source], "MR", PATCH, 1, SPACING, seed=2, stream=1, gamma={"range": (3.0, 3.0), "prob": 1.0})
    default = SynthSampler([ct_source], "MR", PATCH, 1, SPACING, seed=2, stream=1)
    assert default.gamma.adjuster.gamma == (0.7, 1.5) and default.gamma.prob == 0.5
    rng = np.random.default_rng(0)
    lower = 0
    for _ in range(6):
        index, center, seed = plain.draw(rng)
        a, label, contrast = plain.synthesize(index, center, seed)
        b, label_b, contrast_b = dark.synthesize(index, center, seed)
        assert np.array_equal(label, label_b) and contrast == contrast_b  # only the gamma differs
        organs = label > 0
        if organs.any():
            assert float(np.median(b[organs])) <= float(np.median(a[organs])) + 1e-6
            lower += float(np.median(b[organs])) < float(np.median(a[organs])) - 0.05
    assert lower >= 3


def test_slab_keeps_the_slices_around_the_centre_and_nothing_else():
    image = np.ones((40, 8, 8), np.float32)
    label = np.ones((40, 8, 8), np.uint8)
    acq = Acquisition(0, (6.0, 3.0, 3.0), (5, 3), None)  # 5 slices of 6 mm = 10 voxels of 3 mm
    out, lab = simulate_acquisition(image, label, acq, [3.0, 3.0, 3.0], background=-1000.0)
    kept = np.flatnonzero(lab[:, 0, 0])
    assert len(kept) == 10 and kept[0] <= 20 <= kept[-1] and np.all(np.diff(kept) == 1)
    assert np.all(out[lab == 0] == -1000.0)


def test_thick_slices_blur_along_the_slice_axis_only():
    image = np.zeros((32, 32, 32), np.float32)
    image[::2] = 1.0  # stripes along z, constant in y and x
    acq = Acquisition(0, (7.0, 1.0, 1.0), None, None)
    out, _ = simulate_acquisition(image, np.zeros(image.shape, np.uint8), acq, [3.0, 3.0, 3.0], 0.0)
    assert out[:, 16, 16].std() < 0.2 * image[:, 16, 16].std()  # stripes washed out along z
    assert np.allclose(out[10], out[10, 0, 0])  # still constant within a slice


def test_synthetic_batches_are_a_function_of_the_step(ct_source):
    sampler = SynthSampler([ct_source], "MR", PATCH, 2, SPACING, seed=5, stream=1)
    a, b, c = sampler.batch(3), sampler.batch(3), sampler.batch(4)
    assert a["image"].shape == (2, 1, *PATCH) and a["label"].shape == (2, 1, *PATCH)
    assert np.array_equal(a["image"], b["image"]) and np.array_equal(a["label"], b["label"])  # exact resume
    assert not np.array_equal(a["image"], c["image"])
    assert float(a["image"].min()) >= 0.0 and float(a["image"].max()) <= 1.0  # the MR profile's range
    assert set(np.unique(a["label"].numpy()).tolist()) <= {0, 1, 2, 3, 4}


def test_mixed_sampler_draws_kinds_with_their_shares(ct_source):
    synth = SynthSampler([ct_source], "CT", PATCH, 1, SPACING)
    real = ModalitySampler([ct_source.as_case()], PATCH, 1, augment=False)
    mixed = MixedSampler({"synthetic": synth, "real": real}, {"real": 0.25, "synthetic": 0.75}, 4, seed=1)
    rng = np.random.default_rng(0)
    kinds = [mixed.draw(rng)[0] for _ in range(2000)]
    assert abs(kinds.count("real") / 2000 - 0.25) < 0.04
    with pytest.raises(ConfigError, match="no such cases"):
        MixedSampler({"real": real}, {"real": 0.5, "phantom": 0.5}, 4)



def test_generator_2_draws_each_phantom_organ_as_its_own_tissue(tmp_path, ct_source):
    """A phantom labels its organs 1-4; generator 1 read those values as TotalSegmentator ids (liver
    as spleen, left kidney as gallbladder), generator 2 gives each organ its own id. A TotalSegmentator
    map is the same under both."""
    from MultiModalSegLib.data.phantoms import write_phantom_dataset
    from MultiModalSegLib.data.tissues import generation_ids
    from MultiModalSegLib.labels import ABDOMEN_LABELS

    organ_ids = generation_ids(ABDOMEN_LABELS)
    case = load_dataset(write_phantom_dataset(tmp_path, 1, 0, seed=4)).cases("training")[0]
    old, new = prepare_source(case, SPACING, [1, 2, 3, 4]), prepare_source(case, SPACING, [1, 2, 3, 4], organ_ids=organ_ids)
    assert np.array_equal(old.label, new.label)
    for value, tissue, old_tissue in ((1, "liver", "spleen"), (2, "spleen", "kidney"), (3, "kidney", "kidney"), (4, "kidney", "fluid")):
        assert {tissue_of(int(i)) for i in np.unique(new.structures[new.label == value])} == {tissue}
        assert {tissue_of(int(i)) for i in np.unique(old.structures[old.label == value])} == {old_tissue}
    assert np.array_equal(old.structures[old.label == 0], new.structures[new.label == 0])
    ct_case = next(c for c in load_dataset(SAMPLES / "dataset.json").cases("training") if c.modality == "CT")
    assert np.array_equal(prepare_source(ct_case, SPACING, [1, 2, 3, 4], organ_ids=organ_ids).structures, ct_source.structures)


def test_generator_2_bounds_come_from_the_whole_source_as_the_item_draws_it(ct_source):
    """The sample behind a generator-2 item's normalisation holds the source's structures in their
    proportions: those of the patch with the item's own means, the others drawn in the same weighting."""
    sampler = SynthSampler([ct_source], "MR", PATCH, 1, SPACING, generator=2)
    counts = np.bincount(ct_source.structures.ravel(), minlength=256)
    present = np.array([5, UNLABELLED_BASE + 1])  # liver and fat: about half the source's voxels
    means, spreads = np.zeros(256, np.float32), np.zeros(256, np.float32)
    means[present] = 10.0
    whole = sampler.whole_source(0, present, means, spreads, "MR T1", None, seed=3)
    share = counts[present].sum() / counts.sum()
    assert abs(float(np.mean(whole == 10.0)) - share) < 0.02
    others = whole[whole != 10.0]
    assert others.size and others.max() < 2.0  # T1 table values (about 0-1), not the patch's
    assert np.array_equal(whole, sampler.whole_source(0, present, means, spreads, "MR T1", None, seed=3))
    # the item's gain and bias field: each voxel of the sample times a value drawn from them
    doubled = sampler.whole_source(0, present, means, spreads, "MR T1", None, seed=3, gains=np.full((2, 3, 4), 2.0, np.float32))
    assert abs(float(np.mean(doubled == 20.0)) - share) < 0.02


def test_generator_2_changes_only_the_normalisation(ct_source):
    """Same seeds: the same labels and contrasts under both generators, the images scaled differently."""
    one = SynthSampler([ct_source], "MR", PATCH, 1, SPACING, seed=5, gamma={"prob": 0.0}, mr_random_share=0.0)
    two = SynthSampler([ct_source], "MR", PATCH, 1, SPACING, seed=5, gamma={"prob": 0.0}, mr_random_share=0.0, generator=2)
    rng_a, rng_b = np.random.default_rng([5, 1]), np.random.default_rng([5, 1])
    differ = 0
    for _ in range(6):
        draw = one.draw(rng_a)
        assert draw == two.draw(rng_b)
        image_1, label_1, contrast_1 = one.synthesize(*draw)
        image_2, label_2, contrast_2 = two.synthesize(*draw)
        assert contrast_1 == contrast_2 and np.array_equal(label_1, label_2)
        assert 0.0 <= image_2.min() and image_2.max() <= 1.0
        differ += not np.allclose(image_1, image_2, atol=0.02)
    assert differ >= 5


def test_a_log_compression_curves_the_synthesised_items_as_inference_does(ct_source):
    """Same seeds, noise and gamma off: an MR item under a profile with a log_compression is the linear
    item passed through that profile's curve, as inference normalises a scan."""
    from MultiModalSegLib.modalities import MR, with_params

    curved = with_params(MR, {"log_compression": 30})
    kwargs = {"seed": 5, "gamma": {"prob": 0.0}, "generator": 2}
    linear = SynthSampler([ct_source], "MR", PATCH, 1, SPACING, profile=MR, **kwargs)
    bent = SynthSampler([ct_source], "MR", PATCH, 1, SPACING, profile=curved, **kwargs)
    linear.noise.prob = bent.noise.prob = 0.0
    rng = np.random.default_rng([5, 1])
    for _ in range(3):
        draw = linear.draw(rng)
        image_1, label_1, _ = linear.synthesize(*draw)
        image_2, label_2, _ = bent.synthesize(*draw)
        assert np.array_equal(label_1, label_2)
        np.testing.assert_allclose(image_2, curved.compress(image_1.copy()), atol=1e-6)
        assert np.mean(image_2 > image_1 + 0.05) > 0.3  # most of the item is moved, not just its ends


def test_generator_must_be_known(ct_source):
    from MultiModalSegLib.training.config import _check_synthesis

    _check_synthesis({"mix": {"MR": {"synthetic": 1}}, "generator": 2})
    for bad in (3, 0, True, "2"):
        with pytest.raises(ConfigError, match="generator"):
            _check_synthesis({"mix": {"MR": {"synthetic": 1}}, "generator": bad})
    with pytest.raises(ConfigError, match="generator"):
        SynthSampler([ct_source], "MR", PATCH, 1, SPACING, generator=3)
    assert recipe_options({"mix": {}, "generator": 2}, "MR")["generator"] == 2


def test_textured_keeps_each_voxels_place_in_its_structure_of_the_real_ct():
    """A measured structure: the drawn mean plus gain x spread x the voxel's robust z-score in the CT
    (clipped to 3); an unmeasured one (and id 0) keeps its painted value; MR stays at 0 or above."""
    structures = np.array([[[5, 5, 5, 9, 0]]], dtype=np.uint8)
    hu = np.array([[[60.0, 70.0, 500.0, 3.0, -1000.0]]], dtype=np.float32)
    means, spreads = np.zeros(256, np.float32), np.zeros(256, np.float32)
    means[5], spreads[5] = 0.5, 0.02
    painted = np.full(structures.shape, 0.3, np.float32)
    out = textured(structures, hu, {5: (60.0, 10.0), 0: (-1000.0, 5.0)}, means, spreads, 2.0, painted)
    assert np.allclose(out[0, 0], [0.5, 0.5 + 2 * 0.02 * 1.0, 0.5 + 2 * 0.02 * 3.0, 0.3, 0.3])
    means[5] = 0.0
    assert textured(structures, np.full_like(hu, -1000.0), {5: (60.0, 10.0)}, means, spreads, 2.0, painted).min() >= 0.0


def test_a_textured_sampler_draws_the_items_of_a_painted_one_with_the_ct_texture(ct_source):
    """The same draws: labels and contrasts as painted, the image not, a gain within TEXTURE_GAIN; a
    painted sampler's gain is 0. Textured items need an MR-like modality and real CT sources with HU."""
    painted = SynthSampler([ct_source], "MR", PATCH, 1, SPACING, seed=4, generator=2, gamma={"prob": 0.0})
    textured_items = SynthSampler([ct_source], "MR", PATCH, 1, SPACING, seed=4, generator=2, gamma={"prob": 0.0},
                                  texture=True)
    rng = np.random.default_rng(9)
    for _ in range(4):
        draw = painted.draw(rng)
        image, label, contrast = painted.synthesize(*draw)
        tex_image, tex_label, tex_contrast = textured_items.synthesize(*draw)
        assert np.array_equal(label, tex_label) and contrast == tex_contrast
        assert not np.allclose(image, tex_image) and 0.0 <= tex_image.min() and tex_image.max() <= 1.0
        assert TEXTURE_GAIN[0] <= textured_items.texture_gain(draw[2]) <= TEXTURE_GAIN[1]
        assert painted.texture_gain(draw[2]) == 0.0
    with pytest.raises(ConfigError, match="textured CT items need an MR-like modality"):
        SynthSampler([ct_source], "CT", PATCH, 1, SPACING, texture=True)
    with pytest.raises(ConfigError, match="real CT sources with their HU"):
        SynthSampler([dataclasses.replace(ct_source, hu=None)], "MR", PATCH, 1, SPACING, texture=True)


def test_only_a_real_ct_source_keeps_its_hu(ct_source, tmp_path):
    """Phantom images are painted themselves: a phantom CT source has measured HU and no texture to keep."""
    case = next(c for c in load_dataset(SAMPLES / "dataset.json").cases("training") if c.modality == "CT")
    phantom = prepare_source(dataclasses.replace(case, origin="phantom"), SPACING, [1, 2, 3, 4])
    assert ct_source.hu is not None and ct_source.hu.shape == ct_source.structures.shape
    assert phantom.hu is None and phantom.measured_hu


def test_the_texture_is_deformed_with_the_labels():
    """The HU patch takes the same random deformation as the label patch."""
    labels = np.zeros((1, 16, 24, 24), np.float32)
    labels[0, 4:12, 6:18, 8:16] = 1
    plain, with_hu = spatial_transform(0.3), spatial_transform(0.3, with_hu=True)
    for seed in range(4):
        plain.set_random_state(seed=seed)
        with_hu.set_random_state(seed=seed)
        a = plain({"structures": labels, "label": labels})
        b = with_hu({"structures": labels, "label": labels, "hu": labels * 100.0})
        assert np.array_equal(np.asarray(a["label"]), np.asarray(b["label"]))
        inside = np.asarray(b["label"][0]) > 0.5
        assert np.asarray(b["hu"][0])[inside].mean() > 90.0 > np.asarray(b["hu"][0])[~inside].mean()
