"""``training/mr_intensity_probe.py``: remapped MR inputs, the polarity ensemble, the table; with a
stand-in segmenter that calls "liver" every voxel its normalised input puts above 0.5."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from MultiModalSegLib.modalities import MR, ModalityProfile
from Testing.conftest import load_script


@pytest.fixture(scope="module")
def probe_script():
    return load_script("training/mr_intensity_probe.py")


class BrightIsLiver:
    """Probabilities [background, liver, spleen, kidney_right, kidney_left]: liver = the normalised value."""

    def __init__(self):
        self.profiles = {"MR": MR}

    def segment(self, volume, modality, probabilities=False):
        x = self.profiles[modality].normalize(volume)
        p = np.zeros((5, *x.shape), np.float32)
        p[0], p[1] = 1 - x, x
        return SimpleNamespace(probabilities=p)


def test_remaps_and_the_ensemble(probe_script, monkeypatch):
    monkeypatch.setattr(probe_script, "largest_components", lambda labels: labels)
    volume = np.zeros((4, 8, 8), np.float32)
    volume[:, :, :4] = 100.0  # left half bright, right half dark
    reference = np.zeros(volume.shape, np.uint8)
    reference[:, :, 4:] = 1  # the liver is the dark half
    seg = BrightIsLiver()
    scores = probe_script.probe(seg, volume, reference, ["liver"])
    assert scores["as trained"] == {"liver": 0.0}  # calls the bright half liver
    assert scores["negative"] == {"liver": 1.0}  # the negative image puts the dark half on top
    ensemble = next(k for k in scores if "mean probabilities" in k)
    assert ensemble.startswith("as trained + negative") and scores[ensemble]["liver"] in (0.0, 1.0)
    assert seg.profiles["MR"] is MR  # the segmenter's own profile is put back


def test_other_foreground_and_remapped_values(probe_script):
    assert probe_script.other_foreground(MR).foreground == "above_mean"
    above = ModalityProfile("MR", "percentile", {"low_percentile": 0.5, "high_percentile": 99.5, "foreground": "above_mean"})
    assert probe_script.other_foreground(above).foreground == "all"
    squared = probe_script.Remapped(MR, lambda x: 2 * x - 0.5)
    out = squared.normalize(np.linspace(0, 100, 1000, dtype=np.float32))
    assert out.min() == 0.0 and out.max() == 1.0 and out.dtype == np.float32
    ramp = np.concatenate([np.zeros(500, np.float32), np.linspace(1, 100, 500, dtype=np.float32)])
    own, other = MR.bounds(ramp), probe_script.other_foreground(MR).bounds(ramp)
    halfway = probe_script.Blended(MR, 0.5).normalize(ramp)
    middle = (own[0] + other[0]) / 2, (own[1] + other[1]) / 2
    assert np.allclose(halfway, np.clip((ramp - middle[0]) / (middle[1] - middle[0]), 0, 1), atol=1e-6)


def test_table_marks_organs_not_scored(probe_script):
    lines = probe_script.table([("scan", "model 1", "negative", {"liver": 0.5, "spleen": 0.25})])
    assert lines[2] == "| scan | `model 1` | negative | 0.500 | 0.250 | n/s | n/s | 0.375 |"
