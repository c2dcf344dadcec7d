"""``training/error_analysis.py``: what each organ was called, what a prediction lies on, recall
from an organ's lower to its upper end, on small made-up arrays."""

from __future__ import annotations

import numpy as np
import pytest

from Testing.conftest import load_script


@pytest.fixture(scope="module")
def ea():
    return load_script("training/error_analysis.py")


def test_each_reference_organ_is_split_by_what_the_prediction_calls_it(ea):
    ref = np.zeros((4, 4, 4), np.uint8)
    ref[:2] = 1  # liver: 32 voxels
    pred = ref.copy()
    pred[1] = 2  # half the liver called spleen
    went = ea.where_each_organ_went(pred, ref)
    assert went == {"liver": {"liver": 0.5, "spleen": 0.5}}
    pred[1] = 0
    assert ea.where_each_organ_went(pred, ref)["liver"] == {"liver": 0.5, "background": 0.5}


def test_a_prediction_on_a_neighbouring_structure_is_named(ea):
    structures = np.zeros((2, 2, 4), np.uint8)
    structures[..., :3] = 6  # stomach
    pred = np.full((2, 2, 4), 2, np.uint8)  # all spleen
    covers = ea.what_each_prediction_covers(pred, structures, {6: "stomach"})
    assert covers == {"spleen": [("stomach", 0.75), ("unlabelled", 0.25)]}


def test_superior_axis_follows_the_direction_cosines(ea):
    assert ea.superior_axis((1, 0, 0, 0, 1, 0, 0, 0, 1)) == (0, 1)  # axial, z up: array axis 0
    assert ea.superior_axis((-1, 0, 0, 0, -1, 0, 0, 0, -1)) == (0, -1)  # z stored feet first
    assert ea.superior_axis((1, 0, 0, 0, 0, 1, 0, -1, 0)) == (1, -1)  # coronal: y index runs inferior


def test_recall_by_height_runs_from_the_lower_to_the_upper_end(ea):
    ref = np.zeros((10, 3, 3), np.uint8)
    ref[:, 1, 1] = 1
    pred = ref.copy()
    pred[8:] = 0  # upper two slices lost
    assert ea.recall_by_height(pred, ref, 1, 0, 1) == [1.0, 1.0, 1.0, 1.0, 0.0]
    assert ea.recall_by_height(pred, ref, 1, 0, -1) == [0.0, 1.0, 1.0, 1.0, 1.0]  # index runs downwards
    assert ea.recall_by_height(pred, ref, 2, 0, 1) == []


def test_structure_names_read_the_scans_table(ea, tmp_path):
    (tmp_path / "structures.csv").write_text("group,original_idx,structure,id\norgans,51,heart,51\n")
    names = ea.structure_names(tmp_path)
    assert names[51] == "heart" and names[5] == "liver"
    assert ea.structure_names(tmp_path / "missing")[1] == "spleen"


def test_a_tight_border_is_told_from_a_missed_part(ea):
    ref = np.zeros((3, 20, 20), np.uint8)
    ref[:, 2:18, 2:18] = 1  # liver, 1 mm voxels in-plane
    tight = np.zeros_like(ref)
    tight[:, 3:17, 3:17] = 1  # one voxel short all round
    part = ref.copy()
    part[:, 2:18, 12:18] = 0  # a slab 6 voxels deep lost
    spacing = (1.0, 1.0, 4.0)
    assert ea.missed_near_prediction(tight, ref, 1, spacing) == 1.0
    assert ea.missed_near_prediction(part, ref, 1, spacing) == pytest.approx(0.5)  # 3 of its 6 columns
    assert ea.missed_near_prediction(ref, ref, 1, spacing) is None  # nothing missed
    assert ea.missed_near_prediction(np.zeros_like(ref), ref, 1, spacing) is None  # nothing predicted
    rows = ea.markdown("m", {"liver": {"liver": 1.0}}, {}, {}, {"liver": 0.25}).splitlines()
    assert rows[2].endswith("| missed within 3 mm of the prediction |") and rows[4].endswith("| 0.25 |")


def test_each_organs_pieces_are_listed_largest_first_with_what_they_lie_on(ea):
    pred = np.zeros((4, 10, 10), np.uint8)
    pred[:, :3, :3] = 2  # a spleen piece of 36 voxels on the spleen
    pred[:, 6:, 6:] = 2  # a larger one, 64 voxels, on the heart
    pred[0, 0, 9] = 1  # a one-voxel liver
    structures = np.zeros_like(pred)
    structures[:, :3, :3] = 1
    structures[:, 6:, 6:] = 51
    found = ea.pieces(pred, structures, {1: "spleen", 51: "heart"}, voxel_ml=0.5)
    assert found["spleen"] == [(32.0, [("heart", 1.0)]), (18.0, [("spleen", 1.0)])]
    assert found["liver"] == [(0.5, [("unlabelled", 1.0)])] and "kidney_left" not in found
    assert len(ea.pieces(pred, structures, {}, 1.0, largest=1)["spleen"]) == 1
    rows = ea.pieces_markdown(found).splitlines()
    assert rows[2:] == ["| liver | 1 | 0.5 | unlabelled 1.00 |", "| spleen | 1 | 32.0 | heart 1.00 |",
                        "| spleen | 2 | 18.0 | spleen 1.00 |"]


@pytest.mark.parametrize("option", [["--spacing-scale", "0"], ["--window-scale", "0"]])
def test_a_setting_that_cannot_run_is_refused_before_anything_is_read(ea, tmp_path, option, capsys):
    with pytest.raises(SystemExit):
        ea.main(["--scan", "chest_abdomen_ct_02", "--bundle", str(tmp_path / "none.zip"), "--out", str(tmp_path / "o"), *option])
    assert "--spacing-scale must be positive" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
