"""Bundles that average the probabilities of an MR normalised at several bounds (``inference.normalisation_ensemble``)."""


import numpy as np
import pytest
import torch
from conftest import REAL_CT, REAL_MR, with_inference

import MultiModalSegLib.inference.segmenter as segmenter_module
from MultiModalSegLib.errors import BundleError
from MultiModalSegLib.inference import Segmenter
from MultiModalSegLib.io import read_image
from MultiModalSegLib.modalities import ModalityProfile
from MultiModalSegLib.model_card import render_model_card


def _with_ensemble(bundle, tmp_path, value):
    return with_inference(bundle, tmp_path, "normalisation_ensemble", value)


def test_each_pass_sees_the_mr_normalised_at_its_fraction_in_one_crop(tiny_bundle, tmp_path, monkeypatch):
    seen = []
    original = segmenter_module.predict_logits

    def spy(net, image, modality, *args, **kw):
        seen.append((modality, image.clone()))
        return original(net, image, modality, *args, **kw)

    monkeypatch.setattr(segmenter_module, "predict_logits", spy)
    ensemble = Segmenter(_with_ensemble(tiny_bundle, tmp_path, {"MR": [0.0, 0.5, 1.0]}), device="cpu")
    mr, ct = read_image(REAL_MR), read_image(REAL_CT)
    assert ensemble.normalisation_ensemble == {"MR": (0.0, 0.5, 1.0)}
    ensemble.segment(mr, "MR")
    ensemble.segment(ct, "CT")
    assert [m for m, _ in seen] == ["MR", "MR", "MR", "CT"]  # CT keeps one pass
    _, bbox, first = ensemble.network_input(mr, "MR")
    for (_, image), fraction in zip(seen[:3], (0.0, 0.5, 1.0), strict=True):
        assert torch.equal(image, ensemble.network_input(mr, "MR", fraction, bbox)[2])
    assert torch.equal(seen[0][1], first)
    assert not torch.allclose(seen[0][1], seen[2][1], atol=0.05)  # the passes differ: the mean is not either one


def test_the_passes_take_the_mr_percentiles_once_per_foreground_choice(tiny_bundle, tmp_path, monkeypatch):
    calls = []
    original = ModalityProfile.bounds
    monkeypatch.setattr(ModalityProfile, "bounds", lambda profile, a: calls.append(profile.foreground) or original(profile, a))
    ensemble = Segmenter(_with_ensemble(tiny_bundle, tmp_path, {"MR": [0.0, 0.5, 1.0]}), device="cpu")
    ensemble.segment(read_image(REAL_MR), "MR")
    assert len(calls) == 2 and len(set(calls)) == 2  # three passes: the profile's bounds and its other choice's, once each


def test_the_result_is_the_mean_of_the_passes_probabilities(tiny_bundle, tmp_path, monkeypatch):
    """Pass k puts all its probability on class k: their mean is 1/2 for each of the first two classes
    wherever the network ran, and the labels are its argmax."""
    passes = []

    def one_class_each(net, image, modality, *args, **kw):
        logits = torch.full((1, 5, *image.shape[2:]), -30.0)
        logits[:, len(passes)] = 0.0
        passes.append(modality)
        return logits

    monkeypatch.setattr(segmenter_module, "predict_logits", one_class_each)
    ensemble = Segmenter(_with_ensemble(tiny_bundle, tmp_path, {"MR": [0.0, 1.0]}), device="cpu", largest_component=False)
    result = ensemble.segment(read_image(REAL_MR), "MR", probabilities=True)
    p = result.probabilities
    assert passes == ["MR", "MR"]
    inside = p[1] > 0.25  # where the network ran (outside the body crop, background alone)
    assert inside.any() and np.allclose(p[0][inside], 0.5, atol=1e-3) and np.allclose(p[1][inside], 0.5, atol=1e-3)
    assert np.allclose(p.sum(0), 1.0, atol=1e-4) and p[1].max() < 0.5 + 1e-3


@pytest.mark.parametrize("value, message", [({"CT": [0.0, 1.0]}, "not one of the bundle's modalities of arbitrary units"),
                                            ({"PET": [0.0, 1.0]}, "not one of"),
                                            ({"MR": [0.0, 1.5]}, "normalisation_ensemble"),
                                            ({"MR": [0.5]}, "normalisation_ensemble"),
                                            (["MR"], "normalisation_ensemble.*object")])
def test_an_inconsistent_ensemble_is_refused(tiny_bundle, tmp_path, value, message):
    with pytest.raises(BundleError, match=message):
        Segmenter(_with_ensemble(tiny_bundle, tmp_path, value), device="cpu")


def test_the_model_card_says_how_mr_is_predicted(tiny_bundle, tmp_path):
    from MultiModalSegLib.bundle import load_bundle

    meta = load_bundle(_with_ensemble(tiny_bundle, tmp_path, {"MR": [0.0, 0.5, 1.0]})).metadata
    text = render_model_card(meta)
    assert "normalised at 3 bounds" in text
