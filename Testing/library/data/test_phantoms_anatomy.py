"""Phantoms of the second anatomy (``anatomy=2``): wider organ shapes on the same patient layout, the
first anatomy unchanged, the option carried by datasets, recipes and the CLI."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from scipy.spatial import ConvexHull

from MultiModalSegLib.cli import phantom as phantom_cli
from MultiModalSegLib.data.phantoms import (
    ANATOMY_STREAM,
    _sample_anatomy,
    _widen_organs,
    generate_phantom,
    write_phantom_dataset,
)
from MultiModalSegLib.errors import ConfigError, InputError
from MultiModalSegLib.training.config import config_from_dict

LIVER, SPLEEN, KIDNEY_R, KIDNEY_L = 1, 2, 3, 4
SEEDS = range(40)


def anatomies(widen: bool):
    for seed in SEEDS:
        anat = _sample_anatomy(np.random.default_rng([seed, 0]))
        if widen:
            _widen_organs(np.random.default_rng([seed, ANATOMY_STREAM]), anat)
        yield anat


def spread(values) -> float:
    """Largest over smallest."""
    return float(np.max(values) / np.min(values))


def test_the_first_anatomy_is_unchanged():
    """Label voxel counts of one phantom as the first anatomy has always drawn it (a change of the shapes
    moves them by far more than the 0.2 % allowed for floating-point differences between library versions)."""
    _, label = generate_phantom("MR", 1)
    _, same = generate_phantom("MR", 1, anatomy=1)
    assert np.array_equal(label.array, same.array)
    counts = np.bincount(label.array.ravel(), minlength=5)
    np.testing.assert_allclose(counts, [2515637, 125628, 11721, 17270, 17444], rtol=2e-3)


def test_wider_spleens_and_left_lobes_over_forty_patients():
    first, second = list(anatomies(False)), list(anatomies(True))

    def spleen_volume(anat):
        return float(np.prod(anat.organs["spleen"][0][0].axes))

    def left_lobe_width(anat):
        return float(anat.organs["liver"][1][0].axes[0])

    assert spread([spleen_volume(a) for a in first]) < 2.0
    assert spread([spleen_volume(a) for a in second]) > 2.7
    assert spread([left_lobe_width(a) for a in first]) < 1.4
    assert spread([left_lobe_width(a) for a in second]) > 2.5
    hollow = [any(not adds for _, adds in a.organs["spleen"]) for a in second]
    assert not any(any(not adds for _, adds in a.organs["spleen"]) for a in first)
    assert 0.5 < np.mean(hollow) < 0.9
    # a large left lobe grows towards the patient's left (+x), its right end about where it was
    for a, b in zip(first, second, strict=True):
        old, new = a.organs["liver"][1][0], b.organs["liver"][1][0]
        assert new.center[0] - new.axes[0] == pytest.approx(old.center[0] - old.axes[0], abs=1e-6)
    # the patient's layout is kept: body, spine, vessels, organ positions up to their own jitter
    for a, b in zip(first, second, strict=True):
        assert (a.body_axes, a.spine_y, a.aorta, a.vein) == (b.body_axes, b.spine_y, b.aorta, b.vein)
        for name in ("kidney_right", "kidney_left", "spleen"):
            np.testing.assert_allclose(a.organs[name][0][0].center, b.organs[name][0][0].center)


def axial_convexity(mask: np.ndarray) -> float:
    """Area over convex hull area of the largest axial section of ``mask``."""
    z = int(np.argmax(mask.sum(axis=(1, 2))))
    points = np.argwhere(mask[z]).astype(float)
    return float(len(points) / ConvexHull(points).volume)


def test_a_hollow_spleen_is_a_crescent_on_the_image():
    def carved(anat) -> float:  # how deep the carving reaches into the spleen, in its thin semi-axes
        if len(anat.organs["spleen"]) < 2:
            return 0.0
        (spleen, _), (notch, _) = anat.organs["spleen"]
        return float(spleen.axes[0] + notch.axes[0] - np.linalg.norm(notch.center - spleen.center)) / spleen.axes[0]

    depth, hollow = max((carved(a), s) for s, a in zip(SEEDS, anatomies(True), strict=True))
    assert 1.0 < depth <= 1.3
    _, plain = generate_phantom("CT", hollow)
    _, wide = generate_phantom("CT", hollow, anatomy=2)
    assert axial_convexity(plain.array == SPLEEN) > 0.9
    assert axial_convexity(wide.array == SPLEEN) < 0.85
    for organ in (LIVER, KIDNEY_R, KIDNEY_L):
        assert (wide.array == organ).sum() > 1000


def test_anatomy_is_checked_and_carried_by_dataset_cli_and_recipe(tmp_path):
    for bad in (0, 3, True, "2", 2.0):
        with pytest.raises(InputError, match="anatomy"):
            generate_phantom("CT", 0, anatomy=bad)
    path = write_phantom_dataset(tmp_path / "ds", 1, 0, seed=2, anatomy=2)
    assert "wider organ shapes" in json.loads(path.read_text())["description"]
    assert "wider" not in json.loads(write_phantom_dataset(tmp_path / "plain", 1, 0, seed=2).read_text())["description"]

    parser = argparse.ArgumentParser(prog="mmseg")
    phantom_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["phantom", "--out", str(tmp_path / "cli"), "--ct", "1", "--mr", "0", "--anatomy", "2"])
    assert args.anatomy == 2 and args.func(args) == 0
    assert "wider organ shapes" in json.loads((tmp_path / "cli" / "dataset.json").read_text())["description"]
    with pytest.raises(SystemExit):
        parser.parse_args(["phantom", "--out", str(tmp_path / "x"), "--anatomy", "3"])

    base = {"phantoms": {"ct": 1, "mr": 1, "seed": 0}, "labels": "abdomen", "modalities": ["CT", "MR"]}
    assert config_from_dict({**base, "phantoms": {**base["phantoms"], "anatomy": 2}}).phantoms["anatomy"] == 2
    for bad in (3, "wide", True):
        with pytest.raises(ConfigError, match="anatomy"):
            config_from_dict({**base, "phantoms": {**base["phantoms"], "anatomy": bad}})


def test_a_run_writes_and_records_its_phantoms_drawing(tmp_path):
    """The trainer draws the recipe's phantoms with its thorax and anatomy and records both in the data
    set's provenance; a recipe without them records neither (older records stay as they were)."""
    from MultiModalSegLib.training import Trainer

    base = {"labels": "abdomen", "modalities": ["CT", "MR"], "steps": 1}
    drawn = {"ct": 1, "mr": 1, "seed": 0, "thorax": ["ct"], "anatomy": 2}
    for phantoms, recorded in ((drawn, {"thorax": ["CT"], "anatomy": 2}), ({"ct": 1, "mr": 1, "seed": 0}, {})):
        run = tmp_path / str(len(recorded))
        _, _, records = Trainer(config_from_dict({**base, "phantoms": phantoms}), run, quiet=True)._cases()
        record = next(r for r in records if r.get("origin") == "phantom")["phantoms"]
        assert {k: v for k, v in record.items() if k in ("thorax", "anatomy")} == recorded
        description = json.loads((run / "phantoms" / "dataset.json").read_text())["description"]
        assert ("wider organ shapes" in description) == bool(recorded)


def test_the_wider_anatomy_for_some_modalities_only(tmp_path):
    """``{"CT": 2}``: the CT phantoms draw the wider shapes, the MR ones the first anatomy, each exactly
    as a data set of one anatomy draws it; recipes, provenance and fine-tune folders carry the mapping."""
    from MultiModalSegLib.data.phantoms import anatomy_record, drawing_record, modality_anatomy

    assert anatomy_record({"ct": 2, "MR": 1}) == {"CT": 2}
    assert anatomy_record({"CT": 1}) == 1 and drawing_record({"anatomy": {"CT": 1}}) == {}
    assert (modality_anatomy({"CT": 2}, "ct"), modality_anatomy({"CT": 2}, "MR"), modality_anatomy(2, "MR")) == (2, 1, 2)
    for bad, match in (({}, "mapping"), ({"PET": 2}, "unknown modalities"), ({"CT": 3}, "anatomy=3")):
        with pytest.raises(InputError, match=match):
            anatomy_record(bad)
    assert drawing_record({"anatomy": {"ct": 2}}) == {"anatomy": {"CT": 2}}
    assert drawing_record({"anatomy": 1}) == {}

    mixed = write_phantom_dataset(tmp_path / "mixed", 1, 1, seed=4, anatomy={"CT": 2})
    assert "wider organ shapes (CT only)" in json.loads(mixed.read_text())["description"]
    wide = write_phantom_dataset(tmp_path / "wide", 1, 0, seed=4, anatomy=2)
    plain = write_phantom_dataset(tmp_path / "plain", 0, 1, seed=4)
    for rel, same_as in (("ct_000.nii.gz", wide), ("mr_000.nii.gz", plain)):
        assert (mixed.parent / "labelsTr" / rel).read_bytes() == (same_as.parent / "labelsTr" / rel).read_bytes()
        assert (mixed.parent / "imagesTr" / rel).read_bytes() == (same_as.parent / "imagesTr" / rel).read_bytes()

    base = {"phantoms": {"ct": 1, "mr": 1, "seed": 0}, "labels": "abdomen", "modalities": ["CT", "MR"]}
    assert config_from_dict({**base, "phantoms": {**base["phantoms"], "anatomy": {"CT": 2}}}).phantoms["anatomy"] == {"CT": 2}
    with pytest.raises(ConfigError, match="unknown modalities"):
        config_from_dict({**base, "phantoms": {**base["phantoms"], "anatomy": {"XR": 2}}})


def test_a_drawing_names_its_folder_suffix():
    from MultiModalSegLib.data.phantoms import drawing_record, drawing_suffix

    cases = (({}, ""), ({"thorax": True}, "-thorax"), ({"thorax": ["CT"]}, "-thorax-ct"), ({"anatomy": 2}, "-anatomy2"),
             ({"anatomy": {"CT": 2, "MR": 1}}, "-anatomy2-ct"), ({"anatomy": {"CT": 1}}, ""),
             ({"thorax": ["CT"], "anatomy": {"CT": 2}}, "-thorax-ct-anatomy2-ct"))
    for phantoms, suffix in cases:
        assert drawing_suffix(drawing_record(phantoms)) == suffix, phantoms
