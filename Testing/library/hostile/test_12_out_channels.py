"""Item 12: a bundle whose metadata omits ``out_channels`` gets the classes its labels imply, so
labels that disagree with the weights are refused instead of yielding unnamed or impossible segments."""

from __future__ import annotations

import copy

import pytest

from MultiModalSegLib.bundle import load_bundle, save_bundle
from Testing.library.hostile.helpers import TINY, one_error, run, write_scan


def _without_out_channels(path, labels):
    bundle = load_bundle(TINY)
    metadata = copy.deepcopy(bundle.metadata)
    del metadata["network"]["params"]["out_channels"]
    metadata["labels"] = labels
    return save_bundle(path, metadata, bundle.state_dict)


@pytest.mark.parametrize("change", ["fewer labels", "more labels"])
def test_labels_that_disagree_with_the_weights_are_refused(tmp_path, capsys, change):
    labels = copy.deepcopy(load_bundle(TINY).metadata["labels"])
    if change == "fewer labels":
        labels = labels[:3]  # the weights still produce kidney_left: it would come out as 'label_4'
    else:
        labels.append({"value": 5, "name": "pancreas", "color": [200, 200, 0]})  # the weights cannot produce it
    bundle = _without_out_channels(tmp_path / "odd.zip", labels)
    scan = write_scan(tmp_path / "scan.nii.gz")
    code, _, err = run(["segment", scan, "--model", bundle, "-o", tmp_path / "out"], capsys)
    assert code == 1
    one_error(err, "odd.zip", "do not fit")
    assert not (tmp_path / "out").exists()


def test_missing_out_channels_with_matching_labels_still_loads(tmp_path, capsys):
    bundle = _without_out_channels(tmp_path / "ok.zip", load_bundle(TINY).metadata["labels"])
    assert load_bundle(bundle).metadata["network"]["params"]["out_channels"] == 5
    code, _, err = run(["segment", write_scan(tmp_path / "scan.nii.gz"), "--model", bundle, "-o", tmp_path / "out"], capsys)
    assert code == 0, err
