"""``training/averaged_segmenter.py``: ``A+B`` names averaged bundles; their labels follow the members'
mean probabilities, largest piece kept; members of other label sets are refused."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from MultiModalSegLib.errors import InputError
from MultiModalSegLib.inference.segmenter import Segmentation
from MultiModalSegLib.io import Volume
from MultiModalSegLib.labels import LabelInfo
from Testing.conftest import load_script

EYE = tuple(np.eye(3).ravel())
LABELS = [{"name": "liver", "value": 1}, {"name": "spleen", "value": 2}]


class FakeMember:
    """A member that returns fixed probabilities (channels first) on a 1 x 4 x 4 grid."""

    def __init__(self, probabilities: np.ndarray, labels=LABELS, name="m", version="1.0.0") -> None:
        self.p = probabilities.astype(np.float32)
        self.bundle = SimpleNamespace(metadata={"labels": labels, "name": name, "version": version})
        self.label_info = [LabelInfo(d["value"], d["name"], (0, 0, 0)) for d in labels]

    def segment(self, volume, modality="auto", *, probabilities=False):
        labels = Volume(np.argmax(self.p, 0).astype(np.uint8), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), EYE)
        return Segmentation(labels, [], "CT", "given", self.p if probabilities else None, 1.5,
                            rival_pieces={"liver": (9.0, 9.0)})  # a member's own rival, which the average must not carry


def test_members_of_a_spec():
    avg = load_script("training/averaged_segmenter.py")
    assert avg.members("a.zip+b") == [avg.Path("a.zip"), avg.Path("b")]
    assert avg.members("Resources/Models/x.zip") == [avg.Path("Resources/Models/x.zip")]


def test_a_path_with_a_plus_that_exists_is_one_bundle(tmp_path):
    avg = load_script("training/averaged_segmenter.py")
    odd = tmp_path / "c+d.zip"
    odd.write_bytes(b"")
    assert avg.members(str(odd)) == [odd]


def test_labels_follow_the_mean_probabilities_and_keep_the_largest_piece(monkeypatch):
    """Member a is sure of a liver on the left half and unsure elsewhere; member b fairly sure of a
    spleen on the right half and of one spleen voxel on the left. Averaged: the liver left, the spleen
    right (neither member's own map), and the lone spleen voxel dropped as a second piece."""
    avg = load_script("training/averaged_segmenter.py")
    a = np.empty((3, 1, 4, 4))
    a[:, :, :, :2] = np.array([0.05, 0.9, 0.05])[:, None, None, None]
    a[:, :, :, 2:] = np.array([0.4, 0.3, 0.3])[:, None, None, None]
    b = np.empty((3, 1, 4, 4))
    b[:, :, :, :2] = np.array([0.6, 0.2, 0.2])[:, None, None, None]
    b[:, :, :, 2:] = np.array([0.2, 0.2, 0.6])[:, None, None, None]
    b[:, 0, 3, 0] = [0.005, 0.005, 0.99]
    fakes = {"a": FakeMember(a, name="a"), "b": FakeMember(b, name="b", version="2.0.0")}
    monkeypatch.setattr("MultiModalSegLib.inference.Segmenter", lambda path, **options: fakes[str(path)])
    seg = avg.segmenter("a+b", device="cpu")
    result = seg.segment(Volume(np.zeros((1, 4, 4), np.float32), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), EYE), "CT")
    expected = np.zeros((1, 4, 4), np.uint8)
    expected[0, :, :2] = 1
    expected[0, :, 2:] = 2
    expected[0, 3, 0] = 0  # spleen by the mean, a piece apart from the spleen: dropped
    assert np.array_equal(result.labels.array, expected)
    assert np.allclose(result.probabilities, (a + b) / 2.0) and result.seconds == 3.0
    assert result.rival_pieces == {} and result.out_of_place == ()  # the averaged labels' pieces, not a member's
    assert avg.described(seg) == "a 1.0.0 + b 2.0.0" and seg.dropped_pieces == "background"  # the mean's rule


def test_members_of_another_label_set_are_refused(monkeypatch):
    avg = load_script("training/averaged_segmenter.py")
    other = [{"name": "liver", "value": 1}, {"name": "kidney", "value": 2}]
    fakes = {"a": FakeMember(np.ones((3, 1, 4, 4))), "b": FakeMember(np.ones((3, 1, 4, 4)), labels=other)}
    monkeypatch.setattr("MultiModalSegLib.inference.Segmenter", lambda path, **options: fakes[str(path)])
    with pytest.raises(InputError, match="b: its labels differ"):
        avg.segmenter("a+b")


def test_liver_ct_score_names_an_averaged_pair(tiny_bundle, tmp_path):
    script = load_script("training/external_liver_ct.py")
    volume = Volume(np.random.default_rng(0).normal(40.0, 20.0, (12, 12, 12)).astype(np.float32), (3.0, 3.0, 3.0), (0.0, 0.0, 0.0), EYE)
    liver = Volume(np.zeros((12, 12, 12), np.uint8), (3.0, 3.0, 3.0), (0.0, 0.0, 0.0), EYE)
    rows = script.score(f"{tiny_bundle}+{tiny_bundle}", {(3.0, 3.0, 3.0): (volume, liver)})
    assert [r["quality"] for r in rows] == ["normal", "fast"]
    assert rows[0]["bundle"] == "tiny 0.1.0 + tiny 0.1.0" and rows[0]["dropped_pieces"] == "background"
    alone = [r for c in (None, "background") for r in script.score(tiny_bundle, {(3.0, 3.0, 3.0): (volume, liver)}, c)]
    assert [r["dropped_pieces"] for r in alone] == ["next_class", "next_class", "background", "background"]
    names = [line.split(" | ")[0] for line in script.markdown(alone, "x").splitlines() if line.startswith("| `")]
    assert names == ["| `tiny 0.1.0`"] * 2 + ["| `tiny 0.1.0`, dropped pieces: background"] * 2  # the default unnamed


def test_mean_labels_keep_the_piece_the_segmenter_keeps():
    """The training CT's organs and a larger false spleen far below them: the averaged labels keep the true
    spleen, as the Segmenter's organ layout does; for labels without a layout, the largest piece."""
    from MultiModalSegLib.io import read_labelmap
    from MultiModalSegLib.labels import ABDOMEN_LABELS, LABEL_REMAPS
    from MultiModalSegLib.metrics import remap_labels
    from Testing.conftest import REAL_CT

    avg = load_script("training/averaged_segmenter.py")
    found = read_labelmap(REAL_CT.parent / "label_totalseg.nii.gz")
    truth = remap_labels(found.array, LABEL_REMAPS["totalsegmentator"])
    drawn = truth.copy()
    side = round((1.3 * (truth == 2).sum()) ** (1 / 3))
    block = (slice(2, 2 + side), slice(40, 40 + side), slice(50, 50 + side))
    assert not drawn[block].any()
    drawn[block] = 2
    probabilities = np.eye(5, dtype=np.float32)[drawn].transpose(3, 0, 1, 2)
    grid = Volume(drawn, found.spacing, found.origin, found.direction)
    labels, mean, pieces = avg.mean_labels([probabilities, probabilities], list(ABDOMEN_LABELS), grid)
    assert ((labels == 2) == (truth == 2)).all() and np.allclose(mean, probabilities) and pieces[2].out_of_place
    other = [LabelInfo(lab.value, f"organ_{lab.value}", (0, 0, 0)) for lab in ABDOMEN_LABELS]
    labels, _, pieces = avg.mean_labels([probabilities], other, grid)
    assert labels[block].all() and not (labels == 2)[truth == 2].any() and not pieces[2].out_of_place
