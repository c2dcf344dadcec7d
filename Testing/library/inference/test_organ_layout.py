import numpy as np
import pytest
import torch

from MultiModalSegLib.inference import Segmenter
from MultiModalSegLib.inference.organ_layout import (
    ABDOMEN_LAYOUT,
    LAYOUT_MARGIN_MM,
    Placement,
    layout_for,
    layout_of,
    physical_points,
)
from MultiModalSegLib.inference.segmenter import largest_pieces
from MultiModalSegLib.io import Volume, read_image, read_labelmap
from MultiModalSegLib.labels import ABDOMEN_LABELS, LABEL_REMAPS, LabelInfo
from MultiModalSegLib.metrics import remap_labels
from MultiModalSegLib.preprocessing import to_input_grid
from Testing.conftest import REAL_CT

REAL_CT_LABELS = REAL_CT.parent / "label_totalseg.nii.gz"
VALUES = [lab.value for lab in ABDOMEN_LABELS]


def reference_map(reference: Volume | None = None) -> Volume:
    """The training CT's reference labels, remapped to the abdomen labels (resampled onto ``reference``'s grid
    if given, nearest neighbour)."""
    found = read_labelmap(REAL_CT_LABELS)
    labels = Volume(remap_labels(found.array, LABEL_REMAPS["totalsegmentator"]), found.spacing, found.origin, found.direction)
    return labels if reference is None else to_input_grid(labels, reference)


def test_the_abdomen_layout_is_that_of_the_training_ct_map():
    """ABDOMEN_LAYOUT is what layout_of measures on Resources/SampleData/abdomen_ct_01's map, not typed in."""
    measured = layout_of(reference_map(), list(ABDOMEN_LABELS))
    assert set(measured) == set(ABDOMEN_LAYOUT)
    for organ, place in ABDOMEN_LAYOUT.items():
        assert np.allclose(measured[organ], place, atol=0.051), organ
    # the spleen and the left kidney lie to the patient's left of the others (LPS: +x), the liver to the right
    assert ABDOMEN_LAYOUT["spleen"][0] > 100 and ABDOMEN_LAYOUT["kidney_left"][0] > 50 and ABDOMEN_LAYOUT["liver"][0] < -50


def test_a_layout_is_known_only_for_the_abdominal_organs():
    assert layout_for(list(ABDOMEN_LABELS)) == ABDOMEN_LAYOUT
    assert layout_for(list(ABDOMEN_LABELS)[::-1]) == ABDOMEN_LAYOUT
    assert layout_for([ABDOMEN_LABELS[0], ABDOMEN_LABELS[1]]) is None  # places are taken among all four organs
    assert layout_for([ABDOMEN_LABELS[1]]) is None
    assert layout_for([ABDOMEN_LABELS[0], LabelInfo(2, "pancreas", (1, 2, 3))]) is None


def test_physical_points_follow_spacing_origin_and_direction():
    grid = Volume(np.zeros((4, 5, 6), np.uint8), (2.0, 3.0, 4.0), (10.0, 20.0, 30.0), (-1, 0, 0, 0, -1, 0, 0, 0, 1))
    assert np.allclose(physical_points(np.array([0, 0, 0]), grid), [10, 20, 30])
    # index (z, y, x) = (1, 2, 3): x 3 * 2 mm and y 2 * 3 mm along the flipped axes, z 1 * 4 mm
    assert np.allclose(physical_points(np.array([[1, 2, 3]]), grid), [[4, 14, 34]])


def with_false_spleen(labels: np.ndarray, share: float) -> tuple[np.ndarray, tuple[slice, ...]]:
    """``labels`` with a block of spleen ``share`` times the spleen's voxels at the far bottom of the map, away
    from the organs (about 20 cm below the spleen in the training CT's map)."""
    out = labels.copy()
    side = round((share * (labels == 2).sum()) ** (1 / 3))
    block = (slice(2, 2 + side), slice(40, 40 + side), slice(50, 50 + side))
    assert not out[block].any()
    out[block] = 2
    return out, block


def test_an_out_of_place_largest_piece_is_dropped_for_the_piece_in_place():
    ref = reference_map()
    labels, block = with_false_spleen(ref.array, 1.3)
    placement = Placement(labels, ref, list(ABDOMEN_LABELS), ABDOMEN_LAYOUT)
    voxel_ml = float(np.prod(ref.spacing)) / 1000
    kept, pieces = largest_pieces(labels, VALUES, placement, voxel_ml)
    assert pieces[2].out_of_place and pieces[2].kept == (ref.array == 2).sum() and pieces[2].dropped > pieces[2].kept
    assert not kept[block].any() and ((kept == 2) == (ref.array == 2)).all()
    # without the layout, the size rule keeps the false piece
    by_size, sizes = largest_pieces(labels, VALUES)
    assert by_size[block].all() and not (by_size == 2)[ref.array == 2].any() and not sizes[2].out_of_place


def test_a_false_piece_under_half_the_largest_or_within_the_margin_changes_nothing():
    ref = reference_map()
    voxel_ml = float(np.prod(ref.spacing)) / 1000
    # the true spleen is under half the false block: not a candidate, the largest stays
    labels, block = with_false_spleen(ref.array, 2.3)
    kept, pieces = largest_pieces(labels, VALUES, Placement(labels, ref, list(ABDOMEN_LABELS), ABDOMEN_LAYOUT), voxel_ml)
    assert kept[block].all() and not pieces[2].out_of_place
    # a layout that puts the spleen between its true piece and the false one: neither is 50 mm nearer
    labels, block = with_false_spleen(ref.array, 1.3)
    placement = Placement(labels, ref, list(ABDOMEN_LABELS), ABDOMEN_LAYOUT)
    z, y, x = np.argwhere(labels[block] == 2).mean(0) + [s.start for s in block]
    false_place = physical_points(np.array([z, y, x]), ref) - placement.others[2]
    halfway = {**ABDOMEN_LAYOUT, "spleen": tuple((false_place + np.array(ABDOMEN_LAYOUT["spleen"])) / 2)}
    kept, pieces = largest_pieces(labels, VALUES, Placement(labels, ref, list(ABDOMEN_LABELS), halfway), voxel_ml)
    assert kept[block].all() and not pieces[2].out_of_place
    assert LAYOUT_MARGIN_MM == 50.0


@pytest.mark.parametrize("organ_layout", [True, False])
def test_the_segmenter_keeps_the_piece_in_place_on_the_input_grid(tiny_bundle, monkeypatch, organ_layout):
    """A network that draws the training CT's organs and a larger false spleen far below them: the Segmenter
    keeps the true spleen (on the 3 mm input grid too, where the probabilities are resampled and every piece
    is labelled again) and says so; told not to use the layout, it keeps the false one."""
    import MultiModalSegLib.inference.segmenter as segmenter_module

    segmenter = Segmenter(tiny_bundle, device="cpu", organ_layout=organ_layout)
    volume = read_image(REAL_CT)
    model_space, bbox, _ = segmenter.network_input(volume, "CT")
    drawn, block = with_false_spleen(reference_map(model_space).array, 1.3)

    def organs_and_a_false_spleen(net, image, modality, window, **kwargs):
        labels = torch.from_numpy(drawn[bbox].astype(np.int64))
        assert tuple(labels.shape) == tuple(image.shape[2:])
        return 10.0 * torch.nn.functional.one_hot(labels, 5).permute(3, 0, 1, 2)[None].float()

    monkeypatch.setattr(segmenter_module, "predict_logits", organs_and_a_false_spleen)
    seg = segmenter.segment(volume, "CT")
    true_spleen = reference_map(volume).array == 2
    spleen = seg.labels.array == 2
    dice = 2 * (spleen & true_spleen).sum() / (spleen.sum() + true_spleen.sum())
    if organ_layout:
        assert seg.out_of_place == ("spleen",) and dice > 0.8
        kept, dropped = seg.rival_pieces["spleen"]
        assert dropped > kept
        assert any(w.startswith("spleen: its largest piece (about") for w in seg.warnings())
    else:
        assert seg.out_of_place == () and dice == 0.0
        assert any(w.startswith("spleen: a separate piece of") for w in seg.warnings())


def test_keep_pieces_under_keeps_the_piece_another_grid_kept():
    from MultiModalSegLib.inference.segmenter import keep_pieces_under

    labels = np.zeros((10, 10, 30), np.uint8)
    labels[2:8, 2:8, 0:8] = 2  # the larger piece ...
    labels[3:7, 3:7, 20:25] = 2  # ... and the one the guide kept
    labels[0:2, 0:2, 12:14] = 1  # another organ's two pieces, the guide keeping neither
    labels[5:9, 5:9, 12:16] = 1
    guide = np.zeros_like(labels)
    guide[4:6, 4:6, 21:23] = 2
    out = keep_pieces_under(labels, [1, 2], guide)
    assert (out[..., 20:25] == labels[..., 20:25]).all() and not out[..., 0:8].any()
    assert (out == 1).sum() == 64 and out[5:9, 5:9, 12:16].all()  # no overlap: the larger
