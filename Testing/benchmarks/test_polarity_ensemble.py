import numpy as np
import pytest
from conftest import SAMPLES, load_script

from training.real_scans import real_scan

pytestmark = pytest.mark.slow  # whole pipelines: CI's second step


def test_one_pass_and_the_ensemble_are_scored_side_by_side(tiny_bundle):
    bench = load_script("benchmarks/polarity_ensemble.py")
    mr = real_scan("abdomen_mr_01")
    rows = bench.measure([str(tiny_bundle)], data=SAMPLES, scans=(mr,), drawn_from=("abdomen_mr_01",),
                         weightings=("T1", "water"))
    assert [(r["image"], r["role"]) for r in rows] == [("real", "left out"), ("drawn T1", "phantom"), ("drawn water", "phantom")]
    for r in rows:
        assert set(r["dice"]) == {"single", "ensemble"} and set(r["dice"]["single"]) == set(mr.organs)
        assert r["mean"]["single"] == pytest.approx(np.mean(list(r["dice"]["single"].values())), abs=1e-4)
        assert not r["model_asks"]
    stability = rows[0]["bias_field"]
    assert set(stability) == {"single", "ensemble"} and "bias_field" not in rows[1]
    for fields in stability.values():
        assert set(fields) == {"shading 25 %", "shading 50 %"}
        assert all(0.0 <= f["lowest_agreement"] <= 1.0 and 0.0 <= f["mean_dice"] <= 1.0 for f in fields.values())
    text = bench.markdown(rows, 1)
    assert "| drawn MR, every weighting (2) |" in text and "| real MR, left out (1) |" in text
    assert "| abdomen_mr_01 | shading 25 % |" in text


def test_a_bias_field_is_smooth_and_keeps_the_grid():
    bench = load_script("benchmarks/polarity_ensemble.py")
    mr = real_scan("abdomen_mr_01")
    from MultiModalSegLib.io import read_image

    volume = read_image(mr.image(SAMPLES))
    shaded = bench.biased(volume, (0.25, -0.2, 0.1))
    assert shaded.spacing == volume.spacing and shaded.array.shape == volume.array.shape
    ratio = shaded.array[volume.array > 0] / volume.array[volume.array > 0]
    assert 0.5 < ratio.min() < 1.0 < ratio.max() < 2.0


def test_the_normalisation_ensemble_is_scored_the_same_way_and_left_as_the_bundle_asks(tiny_bundle, monkeypatch):
    bench = load_script("benchmarks/polarity_ensemble.py")
    from MultiModalSegLib.inference import segmenter as segmenter_module

    asked = []
    original = segmenter_module.Segmenter.segment

    def spy(self, volume, modality="auto", **kw):
        asked.append(dict(self.normalisation_ensemble))
        return original(self, volume, modality, **kw)

    monkeypatch.setattr(segmenter_module.Segmenter, "segment", spy)
    mr = real_scan("abdomen_mr_01")
    rows = bench.measure([str(tiny_bundle)], data=SAMPLES, scans=(mr,), drawn_from=(), ensemble="normalisation")
    assert len(rows) == 1 and set(rows[0]["dice"]) == {"single", "ensemble"} and not rows[0]["model_asks"]
    assert {"MR": (0.0, 0.5, 1.0)} in asked and {} in asked  # both variants ran
    text = bench.markdown(rows, 1, "normalisation")
    assert "`inference.normalisation_ensemble`" in text and "--ensemble normalisation" in text
