"""Every shipped training config parses, names a registered method and existing data."""

from pathlib import Path

import pytest
from conftest import REPO

from MultiModalSegLib.methods import get_method
from MultiModalSegLib.training import load_config

CONFIGS = sorted((REPO / "training" / "configs").glob("*.json"))
README_DATA = REPO / "data"  # written by the README's `mmseg phantom --out data/phantoms` (Testing/test_readme.py), git-ignored


def test_there_are_configs():
    assert any(p.name == "abdomen_ummkd_default.json" for p in CONFIGS)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_is_valid(path):
    cfg = load_config(path)
    get_method(cfg.method)
    for entry in cfg.datasets:
        path = Path(entry["path"] if isinstance(entry, dict) else entry)
        assert path.is_file() or path.is_relative_to(README_DATA), path


def test_the_recipes_of_shipped_models_reproduce_their_intensity_profiles():
    """A shipped model's recipe normalises as that model was trained (the library's MR profile changed since)."""
    from MultiModalSegLib.modalities import ModalityProfile
    from MultiModalSegLib.models import load_manifest, read_bundle_metadata
    from MultiModalSegLib.resources import resources_dir
    from MultiModalSegLib.training.config import configured_profiles

    for entry in load_manifest():
        meta = read_bundle_metadata(resources_dir() / entry.file)
        cfg = load_config(REPO / "training" / "configs" / meta["training"]["config_file"])
        configured = configured_profiles(cfg)
        for name, recorded in meta["modalities"].items():
            trained = ModalityProfile.from_dict(recorded)
            assert configured[name].kind == trained.kind, (entry.name, name)
            assert {**configured[name].params, "foreground": configured[name].foreground} == \
                {**trained.params, "foreground": trained.foreground}, (entry.name, name)


def test_a_recipe_pins_an_intensity_profile_and_bad_pins_are_refused(tmp_path):
    import json

    from MultiModalSegLib.errors import ConfigError
    from MultiModalSegLib.modalities import get_modality
    from MultiModalSegLib.training.config import config_from_dict, configured_profiles

    base = {"datasets": [str(REPO / "Resources" / "SampleData" / "dataset.json")], "modalities": ["CT", "MR"]}
    plain = configured_profiles(config_from_dict(base))
    assert plain == {"CT": get_modality("CT"), "MR": get_modality("MR")}
    cfg = config_from_dict({**base, "intensity_profiles": {"mr": {"foreground": "above_mean"}}})
    pinned = configured_profiles(cfg)
    assert pinned["MR"].foreground == "above_mean" and pinned["MR"].params["high_percentile"] == 99.5
    assert pinned["MR"].description == ("MR, arbitrary units: 0.5-99.5 percentiles of the voxels above the image mean. "
                                        "Pinned by the recipe: {'foreground': 'above_mean'}.")  # its own words, not the library's
    assert pinned["CT"] == get_modality("CT")
    curved = configured_profiles(config_from_dict({**base, "intensity_profiles": {"MR": {"log_compression": 30}}}))["MR"]
    assert "percentiles of all voxels, then log(1 + 30 u) / log(1 + 30)." in curved.description
    assert "intensity_profiles" in cfg.identity() and "intensity_profiles" not in config_from_dict(base).identity()
    for bad, words in (({"MR": {"foreground": "brightest"}}, "unknown foreground"), ({"MR": {"gain": 2}}, "cannot set"),
                       ({"CT": {"foreground": "all"}}, "cannot set"), ({"CBCT": {"low": 0}}, "does not train"),
                       ({"XR": {}}, "unknown modality"), ({"MR": "all"}, "MODALITY")):
        with pytest.raises(ConfigError, match=words):
            config_from_dict({**base, "intensity_profiles": bad})
    # the trainer normalises with the pinned profile
    from MultiModalSegLib.training.engine import Trainer

    trainer = Trainer(cfg, tmp_path / "run", quiet=True)
    assert trainer.profiles["MR"].foreground == "above_mean" and json.dumps(trainer.profiles["MR"].to_dict())


def test_a_recipe_jitters_a_percentile_profile_and_bad_shares_are_refused(tmp_path):
    from MultiModalSegLib.errors import ConfigError
    from MultiModalSegLib.training.config import config_from_dict, profile_jitter_shares
    from MultiModalSegLib.training.engine import Trainer

    base = {"datasets": [str(REPO / "Resources" / "SampleData" / "dataset.json")], "modalities": ["CT", "MR"]}
    assert profile_jitter_shares(config_from_dict(base)) == {"CT": 0.0, "MR": 0.0}
    assert "profile_jitter" not in config_from_dict(base).identity()  # older recipes still resume
    cfg = config_from_dict({**base, "profile_jitter": {"mr": 0.75}})
    assert profile_jitter_shares(cfg) == {"CT": 0.0, "MR": 0.75} and cfg.identity()["profile_jitter"] == {"mr": 0.75}
    for bad, words in (({"CT": 0.5}, "nothing to jitter"), ({"MR": 1.5}, "in \\[0, 1\\]"), ({"MR": True}, "in \\[0, 1\\]"),
                       ({"CBCT": 0.5}, "does not train"), ({"XR": 0.5}, "unknown modality"), (["MR"], "MODALITY")):
        with pytest.raises(ConfigError, match=words):
            config_from_dict({**base, "profile_jitter": bad})
    # the trainer's samplers jitter that share of the MR items, none of the CT's
    trainer = Trainer(config_from_dict({**base, "profile_jitter": {"MR": 0.75}, "steps": 1}), tmp_path / "run", quiet=True)
    trainer.build()
    assert trainer.samplers["MR"].jitter == 0.75 and trainer.samplers["CT"].jitter == 0.0
    assert trainer.samplers["MR"].cases[0].alternate is not None


def test_a_recipe_negates_a_share_of_its_mr_items_and_its_bundle_averages_both(tmp_path):
    from MultiModalSegLib.errors import ConfigError
    from MultiModalSegLib.training.config import config_from_dict, polarity_shares
    from MultiModalSegLib.training.engine import Trainer

    base = {"datasets": [str(REPO / "Resources" / "SampleData" / "dataset.json")], "modalities": ["CT", "MR"], "steps": 1}
    assert polarity_shares(config_from_dict(base)) == {"CT": 0.0, "MR": 0.0}
    assert "polarity" not in config_from_dict(base).identity()  # older recipes still resume
    for bad, words in (({"CT": 0.5}, "fixes the order"), ({"MR": 0.0}, r"\(0, 1\]"), ({"XR": 0.5}, "unknown modality")):
        with pytest.raises(ConfigError, match=words):
            config_from_dict({**base, "polarity": bad})
    plain = Trainer(config_from_dict(base), tmp_path / "plain", quiet=True)
    plain.build()
    assert "polarity_ensemble" not in plain.metadata(None, 0.0)["inference"]
    trainer = Trainer(config_from_dict({**base, "polarity": {"mr": 0.5}}), tmp_path / "run", quiet=True)
    trainer.build()
    assert trainer.samplers["MR"].polarity == 0.5 and trainer.samplers["CT"].polarity == 0.0
    assert trainer.metadata(None, 0.0)["inference"]["polarity_ensemble"] == ["MR"]


def test_cpu_bfloat16_is_a_yes_or_no_that_older_recipes_lack():
    from MultiModalSegLib.errors import ConfigError
    from MultiModalSegLib.training.config import config_from_dict

    base = {"datasets": [str(REPO / "Resources" / "SampleData" / "dataset.json")], "steps": 1}
    assert "cpu_bfloat16" not in config_from_dict(base).identity()  # older recipes still resume
    assert config_from_dict({**base, "cpu_bfloat16": True}).identity()["cpu_bfloat16"] is True
    with pytest.raises(ConfigError, match="cpu_bfloat16 'yes': give true"):
        config_from_dict({**base, "cpu_bfloat16": "yes"})
