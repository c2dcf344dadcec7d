"""``training/probability_ensembles.py``: groups, the mean of members' probabilities, and scans a member
trained on left out, on small made-up arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from Testing.conftest import load_script
from training.real_scans import RealScan


@pytest.fixture(scope="module")
def pe():
    return load_script("training/probability_ensembles.py")


def _probs(liver_share: float) -> np.ndarray:
    """Five classes on a 4x4x4 grid: the lower half liver with ``liver_share``, else background."""
    p = np.zeros((5, 4, 4, 4), np.float16)
    p[0] = 1.0
    p[0, :2], p[1, :2] = 1.0 - liver_share, liver_share
    return p


def test_groups_are_each_model_and_every_group_of_them(pe):
    assert pe.groups(["a", "b"]) == [("a",), ("b",), ("a", "b")]
    assert pe.groups(["a", "b", "c"])[-1] == ("a", "b", "c") and len(pe.groups(["a", "b", "c"])) == 7
    four = pe.groups(["a", "b", "c", "d"])
    assert len(four) == 15 and len(set(four)) == 15 and ("a", "c", "d") in four and four[-1] == ("a", "b", "c", "d")
    assert [len(g) for g in four] == sorted(len(g) for g in four)  # singles first, the whole set last


def test_a_group_takes_the_argmax_of_its_members_mean(pe):
    scan = RealScan("s", "CT", ("liver",), "validation")
    reference = np.zeros((4, 4, 4), np.uint8)
    reference[:2] = 1
    probs = {("sure", "s"): _probs(0.9), ("unsure", "s"): _probs(0.3), ("against", "s"): _probs(0.0)}
    refs = {"s": (reference, (1.0, 1.0, 1.0))}
    assert pe.group_dice(("sure",), scan, probs, refs) == {"liver": 1.0}
    assert pe.group_dice(("unsure",), scan, probs, refs) == {"liver": 0.0}
    assert pe.group_dice(("sure", "unsure"), scan, probs, refs) == {"liver": 1.0}  # mean 0.6
    assert pe.group_dice(("unsure", "against"), scan, probs, refs) == {"liver": 0.0}  # mean 0.15


def test_named_bundles_and_the_table_leave_out_what_a_member_trained_on(pe):
    assert pe.named_bundle("v22=runs/v22/bundle") == ("v22", Path("runs/v22/bundle"))
    assert pe.named_bundle("Models/x-3.0.0.zip") == ("x-3.0.0", Path("Models/x-3.0.0.zip"))
    scans = [RealScan("ct", "CT", ("liver",), "validation"), RealScan("mr", "MR", ("liver", "spleen"), "train")]
    rows = [{"models": ["a"], "dice": {"ct": {"liver": 0.9}, "mr": {"liver": 0.5, "spleen": 0.7}}},
            {"models": ["a", "b"], "dice": {"ct": {"liver": 0.8}}}]
    table = pe.markdown(rows, scans).splitlines()
    assert table[2] == "| a | 0.900 | 0.500 | 0.700 | 0.900 | 0.600 |"
    assert table[3] == "| a + b | 0.800 | - | - | 0.800 | - |"
