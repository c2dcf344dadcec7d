"""Bundles that average the probabilities of an image and of its negative (``inference.polarity_ensemble``)."""


import numpy as np
import pytest
import torch
from conftest import REAL_CT, REAL_MR, with_inference

import MultiModalSegLib.inference.segmenter as segmenter_module
from MultiModalSegLib.errors import BundleError
from MultiModalSegLib.inference import Segmenter
from MultiModalSegLib.inference.sliding_window import predict_logits
from MultiModalSegLib.io import read_image


class Brightness(torch.nn.Module):
    """Two classes whose logits are +-4 times the voxel value, then a channel of 1 - x (three classes)."""

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x, modality=None):
        return torch.cat([4 * x, -4 * x, 2 * (1 - x)], 1)


def test_the_ensemble_is_the_mean_of_the_two_probabilities():
    image = torch.rand(1, 1, 12, 20, 20, generator=torch.Generator().manual_seed(0))
    net = Brightness().eval()
    kw = {"overlap": 0.5, "device": torch.device("cpu"), "amp": False}
    one = torch.softmax(predict_logits(net, image, "MR", (8, 16, 16), **kw), 1)
    other = torch.softmax(predict_logits(net, 1.0 - image, "MR", (8, 16, 16), **kw), 1)
    fractions = []
    both = predict_logits(net, image, "MR", (8, 16, 16), polarity_ensemble=True, progress=fractions.append, **kw)
    assert torch.allclose(torch.softmax(both, 1), (one + other) / 2, atol=1e-6)
    assert not torch.allclose(one, other, atol=0.05)  # the two halves differ: the mean is not either one
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0) and min(fractions) > 0


def _with_ensemble(bundle, tmp_path, value):
    return with_inference(bundle, tmp_path, "polarity_ensemble", value)


def test_a_bundle_naming_mr_runs_the_ensemble_on_mr_alone(tiny_bundle, tmp_path, monkeypatch):
    asked = []
    original = segmenter_module.predict_logits

    def spy(*args, polarity_ensemble=False, **kw):
        asked.append((args[2], polarity_ensemble))
        return original(*args, polarity_ensemble=polarity_ensemble, **kw)

    monkeypatch.setattr(segmenter_module, "predict_logits", spy)
    plain = Segmenter(tiny_bundle, device="cpu")
    ensemble = Segmenter(_with_ensemble(tiny_bundle, tmp_path, ["MR"]), device="cpu")
    mr, ct = read_image(REAL_MR), read_image(REAL_CT)
    assert plain.polarity_ensemble == frozenset() and ensemble.polarity_ensemble == {"MR"}
    single = plain.segment(mr, "MR", probabilities=True)
    mean = ensemble.segment(mr, "MR", probabilities=True)
    ensemble.segment(ct, "CT")
    assert asked == [("MR", False), ("MR", True), ("CT", False)]
    assert np.allclose(mean.probabilities.sum(0), 1.0, atol=1e-4)
    assert not np.allclose(mean.probabilities, single.probabilities, atol=1e-3)


@pytest.mark.parametrize("value, message", [(["CT"], "not one of the bundle's modalities of arbitrary units"),
                                            (["PET"], "not one of"), ("MR", "polarity_ensemble.*array")])
def test_an_inconsistent_ensemble_is_refused(tiny_bundle, tmp_path, value, message):
    with pytest.raises(BundleError, match=message):
        Segmenter(_with_ensemble(tiny_bundle, tmp_path, value), device="cpu")
