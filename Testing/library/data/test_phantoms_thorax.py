"""Phantoms with a thorax: lung bases against the organs' upper poles, nothing labelled above the
diaphragm, the same patient below it, the option carried by datasets, recipes and the CLI."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from MultiModalSegLib.cli import phantom as phantom_cli
from MultiModalSegLib.data.phantoms import (
    TISSUES,
    generate_phantom,
    generate_tissue_map,
    write_phantom_dataset,
)
from MultiModalSegLib.errors import ConfigError, InputError
from MultiModalSegLib.io import Volume
from MultiModalSegLib.training.config import config_from_dict

LIVER, SPLEEN, KIDNEY_R, KIDNEY_L = 1, 2, 3, 4
LUNG, HEART = TISSUES.index("lung"), TISSUES.index("heart")
CASES = [("CT", 0), ("CT", 3), ("MR", 1), ("MR", 5)]


@pytest.fixture(scope="module")
def thorax_cases() -> dict[tuple[str, int], tuple[Volume, Volume, Volume]]:
    return {
        (m, s): (*generate_phantom(m, s, thorax=True), generate_tissue_map(m, s, thorax=True)) for m, s in CASES
    }


def physical_centroid(label: Volume, value: int) -> np.ndarray:
    idx = np.argwhere(label.array == value)[:, ::-1].mean(axis=0)
    direction = np.asarray(label.direction).reshape(3, 3)
    return np.asarray(label.origin) + direction @ (np.asarray(label.spacing) * idx)


def superior_rows(volume: Volume) -> int:
    """+1 when array index 0 (z) grows towards the head (LPS and the RAS-like storage both keep +z)."""
    return 1 if volume.direction[8] > 0 else -1


@pytest.mark.parametrize("key", CASES)
def test_lung_lies_on_the_upper_poles_of_liver_and_spleen(thorax_cases, key):
    _, label, tissue = thorax_cases[key]
    step = superior_rows(label)
    assert (tissue.array == LUNG).sum() > 0
    for organ in (LIVER, SPLEEN):
        mask = label.array == organ
        top = np.argwhere(mask)[:, 0].max() if step > 0 else np.argwhere(mask)[:, 0].min()
        columns = mask[top]  # the organ's highest slice
        within = int(np.ceil(12.0 / label.spacing[2]))  # 12 mm above it: diaphragm, then lung
        above = tissue.array[top + step : top + step * (within + 1) : step][:, columns]
        assert (above == LUNG).any(), (key, organ)


@pytest.mark.parametrize("key", CASES)
def test_nothing_labelled_in_the_chest(thorax_cases, key):
    image, label, tissue = thorax_cases[key]
    chest = np.isin(tissue.array, [LUNG, HEART])
    assert chest.any() and (tissue.array == HEART).any()
    assert not label.array[chest].any()
    assert set(np.unique(label.array)) == {0, LIVER, SPLEEN, KIDNEY_R, KIDNEY_L}
    lung = image.array[tissue.array == LUNG].astype(np.float64)
    if key[0] == "CT":
        assert -950 <= np.median(lung) <= -750
    else:
        muscle = image.array[tissue.array == TISSUES.index("muscle")].astype(np.float64)
        assert np.median(lung) < 0.5 * np.median(muscle)


@pytest.mark.parametrize("key", CASES)
def test_same_patient_below_the_diaphragm(thorax_cases, key):
    _, label, _ = thorax_cases[key]
    _, plain = generate_phantom(*key)
    for kidney in (KIDNEY_R, KIDNEY_L):
        np.testing.assert_allclose(physical_centroid(label, kidney), physical_centroid(plain, kidney), atol=3.0)
    # the upper poles are bounded by the domes: never more liver than without them on the same anatomy
    liver_ml = [float((lab.array == LIVER).sum() * np.prod(lab.spacing)) / 1000 for lab in (label, plain)]
    assert liver_ml[0] <= liver_ml[1] * 1.02 + 30


def test_thorax_must_be_a_boolean():
    with pytest.raises(InputError, match="thorax"):
        generate_phantom("CT", 0, thorax="yes")


def test_dataset_cli_and_recipe_carry_the_thorax(tmp_path):
    path = write_phantom_dataset(tmp_path / "ds", 1, 0, seed=2, thorax=True)
    doc = json.loads(path.read_text())
    assert "lung bases" in doc["description"]
    plain = json.loads(write_phantom_dataset(tmp_path / "plain", 1, 0, seed=2).read_text())
    assert "lung" not in plain["description"]

    parser = argparse.ArgumentParser(prog="mmseg")
    phantom_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["phantom", "--out", str(tmp_path / "cli"), "--ct", "1", "--mr", "0", "--thorax"])
    assert args.thorax and args.func(args) == 0
    assert "lung bases" in json.loads((tmp_path / "cli" / "dataset.json").read_text())["description"]

    base = {"phantoms": {"ct": 1, "mr": 1, "seed": 0}, "labels": "abdomen", "modalities": ["CT", "MR"]}
    assert config_from_dict({**base, "phantoms": {**base["phantoms"], "thorax": True}}).phantoms["thorax"] is True
    for bad, match in (({"thorax": "yes"}, "thorax"), ({"ribs": True}, "unknown keys"), ({"ct": -1}, "ct")):
        with pytest.raises(ConfigError, match=match):
            config_from_dict({**base, "phantoms": {**base["phantoms"], **bad}})


def test_a_thorax_for_the_phantoms_of_some_modalities_only(tmp_path):
    """``thorax=["CT"]``: the CT cases are drawn with a thorax, the MR cases exactly as without one."""
    from MultiModalSegLib.io import read_image

    only_ct = write_phantom_dataset(tmp_path / "ct-chest", 1, 1, seed=2, thorax=["ct"])
    plain = write_phantom_dataset(tmp_path / "plain", 1, 1, seed=2)
    whole = write_phantom_dataset(tmp_path / "whole", 1, 1, seed=2, thorax=True)

    def image(path, rel):
        return read_image(path.parent / "imagesTr" / rel).array

    assert np.array_equal(image(only_ct, "ct_000.nii.gz"), image(whole, "ct_000.nii.gz"))
    assert np.array_equal(image(only_ct, "mr_000.nii.gz"), image(plain, "mr_000.nii.gz"))
    assert not np.array_equal(image(whole, "mr_000.nii.gz"), image(plain, "mr_000.nii.gz"))
    assert "(CT only)" in json.loads(only_ct.read_text())["description"]
    assert "only" not in json.loads(whole.read_text())["description"]

    base = {"phantoms": {"ct": 1, "mr": 1, "seed": 0}, "labels": "abdomen", "modalities": ["CT", "MR"]}
    assert config_from_dict({**base, "phantoms": {**base["phantoms"], "thorax": ["CT"]}}).phantoms["thorax"] == ["CT"]
    for bad in (["PET"], [], "CT"):
        with pytest.raises(ConfigError, match="thorax"):
            config_from_dict({**base, "phantoms": {**base["phantoms"], "thorax": bad}})
