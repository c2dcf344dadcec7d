"""``training/candidate_bundle.py``: a candidate's weights under another declared inference, for evaluation."""

from __future__ import annotations

import json

import pytest

from MultiModalSegLib.bundle import bundle_sha256, load_bundle
from MultiModalSegLib.inference import Segmenter
from Testing.conftest import load_script


def test_the_copy_declares_the_ensemble_keeps_the_weights_and_says_where_it_came_from(tiny_bundle, tmp_path, capsys):
    script = load_script("training/candidate_bundle.py")
    out = tmp_path / "candidate"
    assert script.main(["--bundle", str(tiny_bundle), "--version", "9.1.0", "--normalisation-ensemble", "MR=0,0.5,1",
                        "--out", str(out)]) == 0
    source, copy = load_bundle(tiny_bundle).metadata, load_bundle(out).metadata
    assert copy["model_sha256"] == source["model_sha256"]  # the same weights
    assert copy["version"] == "9.1.0" and copy["inference"] == {**source["inference"], "normalisation_ensemble": {"MR": [0.0, 0.5, 1.0]}}
    assert copy["training"]["inference_from"] == {"name": source["name"], "version": source["version"],
                                                  "sha256": bundle_sha256(tiny_bundle),
                                                  "inference": {"normalisation_ensemble": {"MR": [0.0, 0.5, 1.0]}}}
    rest = {k: v for k, v in copy.items() if k not in ("version", "inference", "training")}
    assert rest == {k: v for k, v in source.items() if k not in ("version", "inference", "training")}
    assert Segmenter(out, device="cpu").normalisation_ensemble == {"MR": (0.0, 0.5, 1.0)}
    assert "--normalisation-ensemble MR=0,0.5,1" in capsys.readouterr().out


def test_an_existing_output_or_nothing_to_change_is_refused(tiny_bundle, tmp_path):
    script = load_script("training/candidate_bundle.py")
    out = tmp_path / "candidate"
    script.main(["--bundle", str(tiny_bundle), "--polarity-ensemble", "MR", "--out", str(out)])
    before = (out / "metadata.json").read_text()
    with pytest.raises(SystemExit, match="already exists"):
        script.main(["--bundle", str(tiny_bundle), "--normalisation-ensemble", "MR=0,1", "--out", str(out)])
    assert (out / "metadata.json").read_text() == before  # nothing lost
    assert json.loads(before)["inference"]["polarity_ensemble"] == ["MR"]
    with pytest.raises(SystemExit, match="nothing to change"):
        script.main(["--bundle", str(tiny_bundle), "--out", str(tmp_path / "other")])
    assert not (tmp_path / "other").exists()
