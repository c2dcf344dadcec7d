"""``training/drawn_images.py``: a real scan's anatomy drawn with a chosen appearance."""

import numpy as np

from Testing.conftest import SAMPLES
from training.drawn_images import drawn_ct, drawn_mr, scan_anatomy
from training.real_scans import real_scan


def test_drawn_weightings_follow_the_signal_table():
    """Fat is the brightest tissue of a Dixon fat image and the darkest but air of a water image."""
    mr = scan_anatomy(real_scan("abdomen_mr_01"), SAMPLES)
    fat, reference = drawn_mr(mr, "fat")
    water, _ = drawn_mr(mr, "water")
    liver = reference == 1
    assert fat.array.shape == reference.shape and liver.any()
    assert np.median(fat.array[liver]) < 0.2 * np.percentile(fat.array, 99)
    assert np.median(water.array[liver]) > 3 * np.median(fat.array[liver])


def test_a_drawn_ct_puts_each_tissue_near_its_portal_venous_hu():
    """The MR's anatomy drawn as CT: liver about 110 HU, spleen 120, kidneys 155, fat -100, air -1000."""
    mr = scan_anatomy(real_scan("abdomen_mr_01"), SAMPLES)
    ct, reference = drawn_ct(mr)
    drawn_as_mr, same_reference = drawn_mr(mr, "T1")
    assert np.array_equal(reference, same_reference) and ct.spacing == drawn_as_mr.spacing
    for label, hu in ((1, 110.0), (2, 120.0), (3, 155.0)):
        assert abs(np.median(ct.array[reference == label]) - hu) < 25.0  # the blur pulls small organs toward fat
    assert np.percentile(ct.array, 1) < -900.0
