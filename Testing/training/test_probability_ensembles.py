"""``training/probability_ensembles.py``: groups, the mean of members' probabilities, and scans a member
trained on left out, on small made-up arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from MultiModalSegLib.io import Volume
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
    assert pe.groups(["a", "b", "c"], largest=1) == [("a",), ("b",), ("c",)]
    assert len(pe.groups(["a", "b", "c", "d"], largest=2)) == 10 and pe.groups(["a"], largest=5) == [("a",)]


def test_a_group_takes_the_argmax_of_its_members_mean(pe):
    scan = RealScan("s", "CT", ("liver",), "validation")
    reference = np.zeros((4, 4, 4), np.uint8)
    reference[:2] = 1
    probs = {("sure", "s"): _probs(0.9), ("unsure", "s"): _probs(0.3), ("against", "s"): _probs(0.0)}
    refs = {"s": (reference, Volume(np.zeros((4, 4, 4), np.float32), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1)))}
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


def test_named_scales_take_a_name_and_a_positive_factor(pe):
    import argparse

    assert pe.named_scale("x0.9=0.9") == ("x0.9", 0.9)
    for bad in ("x0.9", "=0.9", "x=0", "x=-1", "x=small"):
        with pytest.raises(argparse.ArgumentTypeError, match="NAME=FACTOR"):
            pe.named_scale(bad)


def test_a_scale_for_a_model_not_listed_is_refused(pe, tmp_path, capsys):
    with pytest.raises(SystemExit):
        pe.main(["--bundle", "a=a.zip", "--spacing-scale", "b=0.9", "--out", str(tmp_path)])
    assert "--spacing-scale names no --bundle: ['b']" in capsys.readouterr().err


def test_a_scaled_model_runs_at_its_voxel_size_times_the_factor(pe, tiny_bundle, phantom_dir, tmp_path):
    """The same bundle under two names, one at twice its voxel size: both give probabilities on the
    scan's own grid, and they differ (the network saw a coarser image)."""
    import shutil

    (tmp_path / "s").mkdir()
    shutil.copy(phantom_dir / "imagesTr" / "ct_000.nii.gz", tmp_path / "s" / "image.nii.gz")
    shutil.copy(phantom_dir / "labelsTr" / "ct_000.nii.gz", tmp_path / "s" / "label_totalseg.nii.gz")
    scan = RealScan("s", "CT", ("liver",), "validation")
    probs, references, _ = pe.probabilities({"a": tiny_bundle, "b": tiny_bundle}, [scan], tmp_path, {"b": 2.0})
    a, b = probs["a", "s"], probs["b", "s"]
    assert a.shape == b.shape == (5, *references["s"][0].shape)
    assert not np.allclose(a, b, atol=1e-3)
    assert np.allclose(a.astype(np.float32).sum(0), 1.0, atol=1e-2)


def test_the_spread_over_voxel_sizes_gives_each_size_its_mean_and_the_lowest(pe):
    """One bundle at three sizes, another at one (no spread): only the first gets a row, its sizes
    sorted by factor, and groups of several models are not read as a size."""
    bundles = {"m": Path("m.zip"), "m_fine": Path("m.zip"), "m_coarse": Path("m.zip"), "n": Path("n.zip")}
    scales = {"m_fine": 0.9, "m_coarse": 1.1}
    rows = [{"models": ["m"], "dice": {"ct": {"spleen": 0.8}}},
            {"models": ["m_coarse"], "dice": {"ct": {"spleen": 0.6}}},
            {"models": ["m_fine"], "dice": {"ct": {"spleen": 0.0}}},
            {"models": ["n"], "dice": {"ct": {"spleen": 0.9}}},
            {"models": ["m", "m_fine"], "dice": {"ct": {"spleen": 1.0}}}]
    spread = pe.voxel_size_spread(rows, bundles, scales)
    assert len(spread) == 1
    row = spread[0]
    assert row["names"] == ["m_fine", "m", "m_coarse"] and row["scales"] == [0.9, 1.0, 1.1]
    assert row["dice"]["ct"]["spleen"] == {"by_scale": [0.0, 0.8, 0.6], "mean": pytest.approx(0.4667, abs=1e-4), "lowest": 0.0}
    table = pe.spread_markdown(spread, [RealScan("ct", "CT", ("spleen",), "validation")]).splitlines()
    assert table[2] == "| `m.zip` (m_fine, m, m_coarse) | 0.9 / 1 / 1.1 | 0.000 / 0.800 / 0.600 (0.467) | 0.467 |"


def test_a_run_at_two_voxel_sizes_writes_their_spread_named_as_the_scorecard_reads_it(pe, tiny_bundle, phantom_dir, tmp_path):
    import json
    import shutil

    from MultiModalSegLib.bundle import load_bundle

    scan = tmp_path / "data" / "chest_abdomen_ct_02"
    scan.mkdir(parents=True)
    shutil.copy(phantom_dir / "imagesTr" / "ct_000.nii.gz", scan / "image.nii.gz")
    shutil.copy(phantom_dir / "labelsTr" / "ct_000.nii.gz", scan / "label_totalseg.nii.gz")
    out = tmp_path / "out"
    assert pe.main(["--bundle", f"a={tiny_bundle}", "--bundle", f"a2={tiny_bundle}", "--spacing-scale", "a2=2",
                    "--largest-group", "1", "--data", str(tmp_path / "data"), "--out", str(out)]) == 0
    rows = json.loads((out / "ensembles.json").read_text())
    assert [(r["models"], r["spacing_scales"]) for r in rows] == [(["a"], [1.0]), (["a2"], [2.0])]  # no pair
    spread = json.loads((out / "voxel_sizes.json").read_text())
    meta = load_bundle(tiny_bundle).metadata
    assert len(spread) == 1 and spread[0]["model"] == f"{meta['name']} {meta['version']}" and spread[0]["scales"] == [1.0, 2.0]
    assert "--spacing-scale a2=2.0 --largest-group 1" in (out / "ensembles.md").read_text()
