"""Modality profiles, normalisation and detection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from MultiModalSegLib.errors import InputError
from MultiModalSegLib.io import Volume, read_image, read_labelmap
from MultiModalSegLib.labels import LABEL_REMAPS
from MultiModalSegLib.metrics import remap_labels
from MultiModalSegLib.modalities import (
    MODALITIES,
    ModalityProfile,
    detect_modality,
    detect_modality_reason,
    get_modality,
    modality_names,
    register_modality,
)

DATA = Path(__file__).resolve().parents[2] / "Resources" / "SampleData"  # copies of ../shared/data
CT_PATH = DATA / "abdomen_ct_01" / "image.nii.gz"
MR_PATH = DATA / "abdomen_mr_01" / "image.nii.gz"


def _volume(array: np.ndarray, tag: str | None = None) -> Volume:
    return Volume(array, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1), tag)


def test_ct_window():
    ct = get_modality("ct")
    out = ct.normalize(np.array([-1000, -200, 50, 300, 2000], np.int32))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [0, 0, 0.5, 1, 1], atol=1e-6)


def test_ct_real_scan_range():
    out = get_modality("CT").normalize(read_image(CT_PATH).array)
    assert out.min() == 0.0 and out.max() == 1.0
    assert np.median(out[:, :5, :]) == 0.0  # air in front of the body


def test_mr_percentiles_real_scan():
    array = read_image(MR_PATH).array
    out = get_modality("MR").normalize(array)
    assert out.dtype == np.float32 and out.min() == 0.0 and out.max() == 1.0
    assert out[array <= 0].max() < 0.01  # background (the scan has small negative values too)
    assert np.mean(out == 1.0) == pytest.approx(0.005, abs=0.003)  # the top 0.5 % of all voxels


def test_mr_organs_darker_than_fat_keep_their_contrast():
    """The sample MR is T1-like: subcutaneous fat (about 330-520) lifts the image mean (194) above the
    liver (about 97), spleen and kidneys (20-30). Percentiles of all voxels keep each organ apart from
    air and from the others; the former profile (voxels above the mean) put all three at 0, like air."""
    array = read_image(MR_PATH).array
    volume = read_image(MR_PATH)
    totalseg = read_labelmap(DATA / "abdomen_mr_01" / "label_totalseg.nii.gz", reference=volume).array
    labels = remap_labels(totalseg, LABEL_REMAPS["totalsegmentator"])
    new = get_modality("MR").normalize(array)
    old = ModalityProfile("MR", "percentile", {"low_percentile": 0.5, "high_percentile": 99.5}).normalize(array)
    air = np.median(new[array <= np.percentile(array, 5)])
    liver, spleen = np.median(new[labels == 1]), np.median(new[labels == 2])
    assert air < spleen - 0.02 and spleen < liver - 0.05 and liver < 0.5
    assert np.median(old[labels == 1]) == np.median(old[labels == 2]) == 0.0  # what the old profile did


def test_percentile_foreground_is_stated_and_checked():
    assert get_modality("MR").params["foreground"] == "all"
    legacy = ModalityProfile.from_dict({"name": "MR", "kind": "percentile", "params": {"low_percentile": 1, "high_percentile": 99}})
    assert legacy.foreground == "above_mean"  # bundles written before the key keep their normalisation
    array = np.concatenate([np.zeros(50), np.full(30, 10.0), np.full(20, 100.0)]).astype(np.float32)
    assert legacy.normalize(array)[60] == 0.0 and get_modality("MR").normalize(array)[60] == pytest.approx(0.1)
    with pytest.raises(InputError, match="unknown foreground 'body'"):
        ModalityProfile("MR", "percentile", {"low_percentile": 1, "high_percentile": 99, "foreground": "body"})


def test_log_compression_stretches_the_dark_end_and_keeps_both_ends():
    """On the sample MR (fat-dominated) the organs sit barely above air on the linear scale; the
    curve log(1 + k u) / log(1 + k) spreads them apart from air and from each other, keeps 0 and 1,
    the order of every voxel, and the invariance to the scanner's units."""
    array = read_image(MR_PATH).array
    volume = read_image(MR_PATH)
    totalseg = read_labelmap(DATA / "abdomen_mr_01" / "label_totalseg.nii.gz", reference=volume).array
    labels = remap_labels(totalseg, LABEL_REMAPS["totalsegmentator"])
    linear = get_modality("MR")
    curved = ModalityProfile("MR", "percentile", {**linear.params, "log_compression": 30})
    a, b = linear.normalize(array), curved.normalize(array)
    assert b.dtype == np.float32 and b.min() == 0.0 and b.max() == 1.0
    u = np.linspace(0.0, 1.0, 101, dtype=np.float32)
    np.testing.assert_allclose(curved.compress(u.copy()), np.log1p(30 * u) / np.log1p(30), atol=1e-6)
    order = np.argsort(a.ravel(), kind="stable")
    assert np.all(np.diff(b.ravel()[order]) >= 0)  # monotone: no two voxels swap
    air = array <= np.percentile(array, 5)
    spleen = labels == 2
    gap = lambda x: float(np.median(x[spleen]) - np.median(x[air]))  # noqa: E731
    assert gap(b) > 4 * gap(a) and gap(b) > 0.1
    np.testing.assert_allclose(curved.normalize(array * 0.01), b, atol=2e-5)
    assert linear.compress(u) is u  # no curve: untouched (older profiles normalise exactly as before)


def test_log_compression_is_checked():
    assert ModalityProfile.from_dict(ModalityProfile("MR", "percentile", {"low_percentile": 1, "high_percentile": 99,
                                                                           "log_compression": 30}).to_dict()).log_compression == 30
    for bad in (-1, "30", True, 1e7):
        with pytest.raises(InputError, match="log_compression"):
            ModalityProfile("MR", "percentile", {"low_percentile": 1, "high_percentile": 99, "log_compression": bad})
    with pytest.raises(InputError, match="percentile profiles only"):
        ModalityProfile("CT", "window", {"low": 0, "high": 1, "log_compression": 30})


def test_mr_synthetic_and_constant():
    rng = np.random.default_rng(0)
    array = np.zeros((10, 20, 20), np.float32)
    array[2:8, 5:15, 5:15] = rng.uniform(100, 200, (6, 10, 10))
    out = MODALITIES["MR"].normalize(array)
    assert out[0].max() == 0.0 and 0.0 <= out.min() and out.max() == 1.0
    assert np.all(MODALITIES["MR"].normalize(np.full((4, 4, 4), 7.0)) == 0.0)
    assert np.all(MODALITIES["CT"].normalize(np.full((4, 4, 4), -1000)) == 0.0)


def test_profile_dict_round_trip():
    for profile in MODALITIES.values():
        assert ModalityProfile.from_dict(profile.to_dict()) == profile


def test_registry():
    assert modality_names()[:2] == ["CT", "MR"]
    assert get_modality(" mr ") is MODALITIES["MR"]
    with pytest.raises(InputError, match="--modality auto") as info:
        get_modality("PET")
    assert "'CT'" in str(info.value) and "'MR'" in str(info.value)
    custom = ModalityProfile("PET", "window", {"low": 0, "high": 20}, "PET in SUV")
    try:
        register_modality(custom)
        assert get_modality("pet") is custom
        with pytest.raises(InputError, match="already registered"):
            register_modality(ModalityProfile("pet", "window", {"low": 0, "high": 1}))
    finally:
        MODALITIES.pop("PET", None)
    with pytest.raises(InputError, match="unknown kind"):
        ModalityProfile("X", "zscore", {})


def test_detect_real_scans():
    assert detect_modality(read_image(CT_PATH)) == "CT"
    modality, reason = detect_modality_reason(read_image(MR_PATH))
    assert modality == "MR" and "percentile" in reason


def test_detect_uses_dicom_tag():
    hu = np.full((4, 8, 8), -1000, np.int16)
    hu[1:3, 2:6, 2:6] = 40
    assert detect_modality(_volume(hu)) == "CT"
    modality, reason = detect_modality_reason(_volume(hu, "MR"))
    assert modality == "MR" and "DICOM" in reason
    assert detect_modality(_volume(np.abs(hu), "CT")) == "CT"
    assert detect_modality(_volume(hu, "PT")) == "CT"  # unknown tag: intensities decide


def test_detect_cropped_ct_without_air():
    rng = np.random.default_rng(1)
    fat_and_soft_tissue = rng.choice([-100, 40, 60], size=(6, 10, 10)).astype(np.int16)
    assert detect_modality(_volume(fat_and_soft_tissue)) == "CT"


def test_detection_of_integer_and_float_voxels_agrees():
    """Integer volumes skip the float copy; the answer and its reason are those of the float path."""
    rng = np.random.default_rng(0)
    for low in (-1024, -300, 0):  # CT by air, CT by fat, MR
        values = rng.integers(low, 1500, size=(20, 30, 40)).astype(np.int16)
        assert detect_modality_reason(_volume(values)) == detect_modality_reason(_volume(values.astype(np.float32)))


def test_a_large_volume_is_judged_on_a_regular_subsample_with_the_same_verdict():
    from MultiModalSegLib.modalities import DETECTION_VOXELS, _detection_sample

    rng = np.random.default_rng(0)
    ct = rng.normal(40, 30, (140, 128, 128)).astype(np.int16)
    ct[:, :, :6] = -1000  # 4.7 % air at one side
    sample = _detection_sample(ct)
    assert sample.size <= DETECTION_VOXELS < ct.size and np.shares_memory(sample, ct)
    assert _detection_sample(ct[:10]).size == ct[:10].size  # a small volume is read whole
    volume = Volume(ct, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    name, reason = detect_modality_reason(volume)
    assert name == "CT" and "5% of voxels below -500" in reason
    mr = Volume(np.abs(ct).astype(np.float32), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    assert detect_modality_reason(mr)[0] == "MR"
