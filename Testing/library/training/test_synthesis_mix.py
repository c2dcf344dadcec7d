"""The ``synthesis`` block of a training config: mixed batches, excluded cases, one-sentence errors."""

import json

import numpy as np
import pytest
from conftest import SAMPLES, synthesis_config, tiny_config

from MultiModalSegLib.errors import ConfigError
from MultiModalSegLib.training import Trainer
from MultiModalSegLib.training.config import config_from_dict


def test_mixed_batches_are_a_function_of_the_step(tmp_path):
    first = Trainer(synthesis_config(), tmp_path / "a", quiet=True)
    first.build()
    again = Trainer(synthesis_config(), tmp_path / "b", quiet=True)
    again.build()
    # the real MR is excluded: MR batches come from the CT's label map alone, synthesised as MR
    assert [c.name for c in first.samplers["MR"].cases] == ["abdomen_ct_01"]
    a, b = first.batches(4), again.batches(4)
    for modality in ("CT", "MR"):
        assert np.array_equal(a[modality]["image"], b[modality]["image"])
        assert np.array_equal(a[modality]["label"], b[modality]["label"])
    assert not np.array_equal(a["MR"]["image"], first.batches(5)["MR"]["image"])


def test_a_mix_asking_for_cases_that_do_not_exist_is_refused(tmp_path):
    bad = {"sources": ["datasets"], "mix": {"CT": {"real": 1.0}, "MR": {"real": 1.0}}}
    with pytest.raises(ConfigError, match="no such cases"):
        Trainer(synthesis_config(synthesis=bad), tmp_path, quiet=True).build()


def test_a_textured_mr_kind_draws_the_real_ct_with_its_texture(tmp_path):
    """``textured`` in an MR mix: a sampler of the real CT sources alone, with texture; the painted
    kind keeps every source; a mix without it builds no textured sampler."""
    mix = {"sources": ["datasets", "phantoms"], "mix": {"CT": {"synthetic": 1.0}, "MR": {"synthetic": 0.5, "textured": 0.5}}}
    trainer = Trainer(synthesis_config(synthesis=mix, phantoms={"ct": 1, "mr": 1, "validation": 0, "seed": 3}),
                      tmp_path / "t", quiet=True)
    trainer.build()
    kinds = trainer.samplers["MR"].samplers
    assert kinds["textured"].texture and [s.name for s in kinds["textured"].sources] == ["abdomen_ct_01"]
    assert not kinds["synthetic"].texture and len(kinds["synthetic"].sources) == 3
    assert "textured" not in trainer.samplers["CT"].samplers
    assert trainer.batches(2)["MR"]["image"].shape[0] == trainer.cfg.batch_size


def test_a_real_maps_kind_paints_the_real_sources_alone(tmp_path):
    """``real_maps``: items painted from the real sources' label maps, without texture; the
    synthesised kind keeps every source."""
    mix = {"sources": ["datasets", "phantoms"], "mix": {"CT": {"synthetic": 0.5, "real_maps": 0.5}, "MR": {"real_maps": 1.0}}}
    trainer = Trainer(synthesis_config(synthesis=mix, phantoms={"ct": 1, "mr": 1, "validation": 0, "seed": 3}),
                      tmp_path / "r", quiet=True)
    trainer.build()
    for modality in ("CT", "MR"):
        kind = trainer.samplers[modality].samplers["real_maps"]
        assert not kind.texture and [s.name for s in kind.sources] == ["abdomen_ct_01"]
    assert len(trainer.samplers["CT"].samplers["synthetic"].sources) == 3
    assert trainer.batches(1)["MR"]["label"].shape[0] == trainer.cfg.batch_size


def test_a_textured_ct_kind_is_refused():
    with pytest.raises(ConfigError, match="textured items are MR-like images"):
        config_from_dict(tiny_config(SAMPLES, synthesis={"mix": {"CT": {"textured": 1.0}, "MR": {"synthetic": 1.0}}}))


@pytest.mark.parametrize("synthesis", [
    {"mix": {"CT": {"real": 1.0, "painted": 1.0}}},
    {"sources": ["atlases"], "mix": {"CT": {"real": 1.0}}},
    {"mix": {"CT": {"real": -1.0}}},
    {"sources": ["datasets"]},
])
def test_malformed_synthesis_is_one_sentence(synthesis):
    with pytest.raises(ConfigError, match="\"synthesis\" must be"):
        config_from_dict(tiny_config(SAMPLES, synthesis=synthesis))


def test_excluding_an_unknown_case_is_refused(tmp_path):
    datasets = [{"path": str(SAMPLES / "dataset.json"), "exclude": ["abdomen_mr_02"]}]
    cfg = config_from_dict(tiny_config(SAMPLES, datasets=datasets))
    with pytest.raises(ConfigError, match="abdomen_mr_02"):
        Trainer(cfg, tmp_path, quiet=True).build()


@pytest.mark.parametrize("recipe_file", ["abdomen_synth_default.json", "abdomen_synth_v4.json"])
def test_the_default_recipes_never_train_on_the_validation_scans(recipe_file):
    recipe = json.loads((SAMPLES.parents[1] / "training" / "configs" / recipe_file).read_text())
    trained = [d for d in recipe["datasets"] if "real_validation" not in d["path"]]
    assert all("abdomen_mr_01" in d.get("exclude", []) for d in trained)
    names = {c["name"] for d in trained for c in json.loads((SAMPLES / "dataset.json").read_text())["training"]}
    assert "chest_abdomen_ct_02" not in names


def test_profile_jitter_reaches_every_kind_of_a_modality(tmp_path):
    mix = {"sources": ["datasets"], "mix": {"CT": {"real": 0.5, "synthetic": 0.5}, "MR": {"synthetic": 0.5, "real": 0.5}}}
    datasets = [{"path": str(SAMPLES / "dataset.json")}]
    trainer = Trainer(config_from_dict(tiny_config(SAMPLES, datasets=datasets, synthesis=mix, profile_jitter={"MR": 0.5})),
                      tmp_path, quiet=True)
    trainer.build()
    assert {k: s.jitter for k, s in trainer.samplers["MR"].samplers.items()} == {"real": 0.5, "synthetic": 0.5}
    assert {k: s.jitter for k, s in trainer.samplers["CT"].samplers.items()} == {"real": 0.0, "synthetic": 0.0}
