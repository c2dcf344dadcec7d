"""Cone-beam CT phantoms (the third modality): acquisition, intensities, dataset writing, CLI."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from scipy import ndimage

from MultiModalSegLib.cli import phantom as phantom_cli
from MultiModalSegLib.data import phantoms
from MultiModalSegLib.data.dataset import load_dataset
from MultiModalSegLib.data.phantoms import (
    TISSUES,
    generate_phantom,
    generate_tissue_map,
    write_phantom_dataset,
)
from MultiModalSegLib.errors import InputError
from MultiModalSegLib.modalities import get_modality

SEEDS = (0, 1)


@pytest.fixture(scope="module")
def cases() -> dict:
    out = {}
    for seed in SEEDS:
        image, label = generate_phantom("CBCT", seed)
        out[seed] = (image, label, generate_tissue_map("CBCT", seed), generate_phantom("CT", seed)[0])
    return out


def _disc(image) -> np.ndarray:
    """In-plane mask of the inscribed circle of an image grid (array order y, x)."""
    _, ny, nx = image.array.shape
    yy, xx = np.mgrid[:ny, :nx]
    r = min(nx - 1, ny - 1) / 2
    return (yy - (ny - 1) / 2) ** 2 + (xx - (nx - 1) / 2) ** 2 <= r * r


def _radius(image) -> np.ndarray:
    _, ny, nx = image.array.shape
    yy, xx = np.mgrid[:ny, :nx]
    return np.sqrt((yy - (ny - 1) / 2) ** 2 + (xx - (nx - 1) / 2) ** 2) / (min(nx - 1, ny - 1) / 2)


def test_registered_profile_is_ct_like():
    profile = get_modality("cbct")
    assert profile.name == "CBCT" and profile.kind == "window"
    hu = np.array([-1000.0, -200.0, 50.0, 300.0, 1000.0])
    np.testing.assert_allclose(profile.normalize(hu), [0.0, 0.0, 0.5, 1.0, 1.0])


def test_deterministic_and_distinct_from_ct(cases):
    image, label = generate_phantom("cbct", 0)
    np.testing.assert_array_equal(image.array, cases[0][0].array)
    np.testing.assert_array_equal(label.array, cases[0][1].array)
    assert image.array.shape != cases[0][3].array.shape


@pytest.mark.parametrize("seed", SEEDS)
def test_narrow_field_of_view_and_short_coverage(cases, seed):
    image, label, _, ct = cases[seed]
    nx, ny, nz = image.size
    sx, sy, sz = image.spacing
    assert nx == ny and sx == pytest.approx(sy)
    assert 245 <= (nx - 1) * sx <= 305 and 145 <= (nz - 1) * sz <= 205
    assert (nx - 1) * sx < (ct.size[0] - 1) * ct.spacing[0]  # narrower than the CT of the same patient
    outside = ~_disc(image)
    assert np.all(image.array[:, outside] == -1000)
    assert not label.array[:, outside].any()  # nothing labelled where nothing was reconstructed
    assert {1, 3, 4} <= set(np.unique(label.array))  # liver and both kidneys in the coverage
    assert image.same_grid(label, tol=0)


@pytest.mark.parametrize("seed", SEEDS)
def test_noisier_than_ct_with_cupping(cases, seed):
    image, _, tissues, ct = cases[seed]
    data = image.array.astype(np.float64)
    fat = ndimage.binary_erosion(tissues.array == TISSUES.index("fat"), iterations=1) & _disc(image)[None]
    ct_tissues = generate_tissue_map("CT", seed)
    ct_fat = ndimage.binary_erosion(ct_tissues.array == TISSUES.index("fat"), iterations=1)
    assert data[fat].std() > 1.5 * ct.array[ct_fat].std()
    # cupping: muscle near the centre (psoas, back muscles) darker than muscle near the rim (wall)
    muscle = ndimage.binary_erosion(tissues.array == TISSUES.index("muscle"), iterations=1)
    r = np.broadcast_to(_radius(image)[None], muscle.shape)
    inner, rim = data[muscle & (r < 0.45)].mean(), data[muscle & (r > 0.8) & (r <= 1.0)].mean()
    assert inner < rim - 10, (inner, rim)


def test_streaks_are_straight_bands():
    rng = np.random.default_rng(0)
    tissue = np.zeros((5, 200, 200), np.uint8)
    tissue[:, 100, 100] = TISSUES.index("cortical_bone")
    xs = np.arange(200.0)
    acq = phantoms.Acquisition(xs, xs, np.arange(5.0) * 3, phantoms.LPS_DIRECTION, False, rng)
    streaks = phantoms._streaks(tissue, acq)
    assert streaks.shape == tissue.shape
    assert np.abs(streaks).max() > 20
    assert np.mean(np.abs(streaks[0]) < 1) > 0.5  # thin bands: most of the plane is untouched
    big = np.abs(streaks[0]) > 1
    ratio = streaks[:, big] / streaks[:1, big]  # the same in-plane pattern in every slice, scaled along z
    np.testing.assert_allclose(ratio, np.broadcast_to(ratio[:, :1], ratio.shape), rtol=1e-4)


def test_extra_modality_keeps_ct_and_mr_files_identical(tmp_path):
    plain = write_phantom_dataset(tmp_path / "plain", 1, 1, seed=4)
    mixed = write_phantom_dataset(tmp_path / "mixed", 1, 1, seed=4, extra={"cbct": 1})
    for rel in ("imagesTr/ct_000.nii.gz", "labelsTr/mr_000.nii.gz", "imagesTr/mr_000.nii.gz"):
        assert (plain.parent / rel).read_bytes() == (mixed.parent / rel).read_bytes()
    a, b = json.loads(plain.read_text()), json.loads(mixed.read_text())
    assert b["training"][:2] == a["training"]
    assert b["training"][2:] == [{"image": "imagesTr/cbct_000.nii.gz", "label": "labelsTr/cbct_000.nii.gz", "modality": "CBCT"}]
    assert a["description"].startswith("Synthetic unpaired abdominal CT and MR phantoms")
    assert "CT, MR and CBCT" in b["description"]
    spec = load_dataset(mixed)
    assert [c.modality for c in spec.cases("training")] == ["CT", "MR", "CBCT"]
    patients = {phantoms.patient_seed(4, m, i) for m in ("CT", "MR", "CBCT") for i in range(10)}
    assert len(patients) == 30  # unpaired: a different patient per case


def test_extra_modality_only_and_validation_split(tmp_path):
    data = json.loads(write_phantom_dataset(tmp_path, 0, 0, extra={"CBCT": 1}, n_validation=1).read_text())
    assert data["training"] == []
    assert [(c["image"], c["modality"]) for c in data["validation"]] == [("imagesTr/cbct_000.nii.gz", "CBCT")]


@pytest.mark.parametrize(
    ("extra", "match"),
    [({"CT": 1}, "'CT'.*CBCT"), ({"PET": 1}, "'PET'"), ({"CBCT": -1}, "CBCT"), ([("CBCT", 1)], "mapping")],
)
def test_extra_bad_input(tmp_path, extra, match):
    with pytest.raises(InputError, match=match):
        write_phantom_dataset(tmp_path, 1, 1, extra=extra)


def test_cli_writes_cbct(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="mmseg")
    phantom_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["phantom", "--out", str(tmp_path / "out"), "--ct", "0", "--mr", "0", "--cbct", "1"])
    assert args.func(args) == 0
    data = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert [c["modality"] for c in data["training"]] == ["CBCT"]
    assert all((tmp_path / "out" / c["label"]).is_file() for c in data["training"])
