"""The default model on inputs a clinic sends: MR in any units or with a bias field, a thin CT slab,
a coronal MR acquisition, fast quality. Real sample scans, the shipped default model; the MR is the
part of each slice that holds its four organs (``conftest.real_mr_crop``: one batch of windows)."""

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import REAL_CT, SAMPLES, real_ct_organ_slab, real_mr_crop

from MultiModalSegLib.inference import Segmenter
from MultiModalSegLib.io import Volume, read_image, read_labelmap
from MultiModalSegLib.labels import ABDOMEN_LABELS, LABEL_REMAPS
from MultiModalSegLib.metrics import dice_scores, remap_labels


@pytest.fixture(scope="module")
def default_model() -> Segmenter:
    return Segmenter(device="cpu", amp=False)


@pytest.fixture(scope="module")
def mr() -> Volume:
    return real_mr_crop()


@pytest.fixture(scope="module")
def mr_labels(default_model, mr) -> np.ndarray:
    return default_model.segment(mr, "MR").labels.array


def _scaled(volume: Volume, factor) -> Volume:
    return Volume(volume.array.astype(np.float32) * np.asarray(factor, np.float32), volume.spacing, volume.origin,
                  volume.direction)


def _agreement(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    return {k: v for k, v in dice_scores(a, b, ABDOMEN_LABELS).items() if not np.isnan(v)}


@pytest.mark.parametrize("factor", [0.01, 100.0])
def test_mr_units_do_not_change_the_segmentation(default_model, mr, mr_labels, factor):
    labels = default_model.segment(_scaled(mr, factor), "MR").labels.array
    assert mr_labels.any()
    assert np.array_equal(labels, mr_labels)


def test_mr_bias_field_barely_changes_the_segmentation(default_model, mr, mr_labels):
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n, dtype=np.float32) for n in mr.array.shape], indexing="ij")
    field = np.exp(0.25 * x - 0.2 * y + 0.1 * z)  # a smooth receive-coil shading of about +-25 %
    labels = default_model.segment(_scaled(mr, field), "MR").labels.array
    agreement = _agreement(labels, mr_labels)
    assert agreement and min(agreement.values()) > 0.85, agreement


def _reference(path, volume: Volume) -> np.ndarray:
    return remap_labels(read_labelmap(path, reference=volume).array, LABEL_REMAPS["totalsegmentator"])


def test_a_twenty_slice_ct_slab_is_segmented(default_model):
    ct = read_image(REAL_CT)
    ref = _reference(SAMPLES / "abdomen_ct_01" / "label_totalseg.nii.gz", ct)
    z0 = int(np.flatnonzero((ref == 1).any(axis=(1, 2))).mean()) - 10  # 20 slices through the liver
    origin = ct.to_sitk().TransformIndexToPhysicalPoint((0, 0, z0))
    slab = Volume(ct.array[z0:z0 + 20], ct.spacing, origin, ct.direction)
    result = default_model.segment(slab, "auto")
    assert result.modality == "CT" and result.labels.array.shape == slab.array.shape
    assert dice_scores(result.labels.array, ref[z0:z0 + 20], ABDOMEN_LABELS)["liver"] > 0.7


def test_a_coronal_mr_acquisition_is_segmented(default_model, mr, mr_labels):
    # the same anatomy acquired coronally: slices along anterior-posterior, 1.5 mm, rows head-feet
    coronal_direction = (1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, -1.0, 0.0)  # columns: x, -z (head to feet), +y
    image = mr.to_sitk()
    lo = np.array(image.TransformIndexToPhysicalPoint((0, 0, 0)))
    hi = np.array(image.TransformIndexToPhysicalPoint(tuple(s - 1 for s in image.GetSize())))
    spacing = (1.5, 1.5, 3.0)
    size = [int(abs(hi[0] - lo[0]) / 1.5) + 1, int(abs(hi[2] - lo[2]) / 1.5) + 1, int(abs(hi[1] - lo[1]) / 3.0) + 1]
    origin = (min(lo[0], hi[0]), min(lo[1], hi[1]), max(lo[2], hi[2]))
    resampled = sitk.Resample(image, size, sitk.Transform(), sitk.sitkLinear, origin, spacing, coronal_direction, 0.0)
    coronal = Volume.from_sitk(resampled)
    assert (coronal.array > 0).mean() > 0.3  # the grid covers the scan
    result = default_model.segment(coronal, "MR")
    assert result.labels.array.shape == coronal.array.shape and result.labels.direction == coronal_direction
    back = sitk.Resample(result.labels.to_sitk(), image, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    agreement = _agreement(sitk.GetArrayFromImage(back), mr_labels)
    assert agreement and np.mean(list(agreement.values())) > 0.7, agreement


@pytest.mark.slow
def test_fast_quality_keeps_the_ct_segmentation(default_model):
    ct = real_ct_organ_slab()  # the CT's slices that hold its four organs
    normal = default_model.segment(ct, "CT").labels.array
    fast = Segmenter(device="cpu", amp=False, quality="fast").segment(ct, "CT").labels.array
    agreement = _agreement(fast, normal)
    assert agreement["liver"] > 0.95 and np.mean(list(agreement.values())) > 0.9, agreement
