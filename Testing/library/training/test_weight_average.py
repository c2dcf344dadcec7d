import json
import shutil

import pytest
import torch
from conftest import tiny_config

from MultiModalSegLib.bundle import load_bundle
from MultiModalSegLib.errors import ConfigError
from MultiModalSegLib.training import Trainer
from MultiModalSegLib.training.config import config_from_dict
from MultiModalSegLib.training.progress import read_progress
from MultiModalSegLib.training.weight_average import WeightAverage

INSTANCE = {"name": "unet3d", "params": {"features": [4, 8, 16], "norm": "modality_instance"}}  # no running statistics


def test_the_running_mean_is_the_mean_of_the_states_it_was_given():
    average = WeightAverage(start=4, every=2)
    assert [s for s in range(1, 11) if average.due(s)] == [4, 6, 8, 10]
    states = [{"w": torch.randn(3, 3, dtype=torch.float16), "n": torch.tensor(i)} for i in range(5)]
    for state in states:
        average.update(state)
    like = {"w": torch.zeros(3, 3, dtype=torch.float16), "n": torch.tensor(0)}
    mean = average.averaged(like)
    expected = torch.stack([s["w"].float() for s in states]).mean(0)
    assert mean["w"].dtype == torch.float16 and torch.allclose(mean["w"].float(), expected, atol=1e-3)
    assert int(mean["n"]) == 4  # a counter is the last update's, not a mean
    assert average.record() == {"start": 4, "every": 2, "count": 5, "steps": [4, 12]}


def test_a_malformed_weight_average_is_refused_with_an_example(phantom_dir):
    for spec, words in [({"start": 0, "every": 2}, "start 0"), ({"start": 2}, "give"), ({"start": 2, "every": True}, "every True"),
                        ({"start": 7, "every": 1}, "after the run's last step")]:
        with pytest.raises(ConfigError, match=words) as caught:
            config_from_dict(tiny_config(phantom_dir, weight_average=spec))
        assert '"every": 250' in str(caught.value)


def weights(bundle):
    return load_bundle(bundle).state_dict


def test_averaging_changes_no_step_and_its_bundle_carries_the_mean(phantom_dir, tmp_path):
    """The same run with and without weight_average: the last step's weights are the same; the averaged
    run's bundle is the mean of the weights after steps 2, 4 and 6, validated in the run as such."""
    plain = Trainer(config_from_dict(tiny_config(phantom_dir, steps=6, network=INSTANCE)), tmp_path / "plain", quiet=True).run()
    cfg = config_from_dict(tiny_config(phantom_dir, steps=6, validate_every=3, network=INSTANCE,
                                       weight_average={"start": 2, "every": 2}))
    trainer = Trainer(cfg, tmp_path / "averaged", quiet=True)
    snapshots = []
    step = trainer.train_step

    def recording_step(*args):
        losses = step(*args)
        if trainer.step % 2 == 0:
            snapshots.append({k: v.detach().clone() for k, v in trainer.method.inference_network().state_dict().items()})
        return losses

    trainer.build()
    trainer.train_step = recording_step
    result = trainer.run()
    last = weights(tmp_path / "averaged" / "bundle_last_step")
    for key, value in weights(plain.bundle).items():
        assert torch.equal(last[key], value), key
    averaged = weights(result.bundle)
    assert len(snapshots) == 3
    for key, value in averaged.items():
        if value.is_floating_point():
            torch.testing.assert_close(value, torch.stack([s[key] for s in snapshots]).mean(0))
    meta = json.loads((result.bundle / "metadata.json").read_text())
    last_meta = json.loads((tmp_path / "averaged" / "bundle_last_step" / "metadata.json").read_text())
    assert last_meta["name"] == meta["name"] + "-last-step" and "last step" in last_meta["description"]
    assert meta["training"]["weight_average"] == {"start": 2, "every": 2, "count": 3, "steps": [2, 6]}
    checks = [r for r in read_progress(tmp_path / "averaged" / "progress.jsonl") if r["event"] == "validation"]
    assert [c["weight_average"]["count"] for c in checks] == [1, 3]  # steps 3 and 6
    assert meta["metrics"]["validation_dice"] == checks[-1]["weight_average"]["dice"]
    assert result.validation == checks[-1]["weight_average"]["dice"]  # the scores of the weights the bundle carries


@pytest.mark.parametrize("name", ["tiny", "abdomen-ummkd-synth"])
def test_a_finished_run_whose_bundles_were_removed_exports_them_again(phantom_dir, tmp_path, name, monkeypatch):
    """The same weights, scores and names; a run of a manifest model's recipe keeps the derived name
    (``<name>-trained-<time>``) of its first export, which the ``done`` event records."""
    import MultiModalSegLib.training.engine as engine

    cfg = config_from_dict(tiny_config(phantom_dir, steps=4, validate_every=2, network=INSTANCE, name=name,
                                       weight_average={"start": 2, "every": 2}))
    first = Trainer(cfg, tmp_path, quiet=True).run()
    real = engine.derived_model_name
    stamps = iter(["20990101-000000", "20990101-000001"])  # a later export would take a later time
    monkeypatch.setattr(engine, "derived_model_name", lambda base, kind: real(base, kind, stamp=next(stamps)))
    before = {folder: json.loads((tmp_path / folder / "metadata.json").read_text()) for folder in ("bundle", "bundle_last_step")}
    assert before["bundle"]["name"].startswith(f"{name}-trained-") == (name != "tiny")  # a manifest name is derived
    weights_before = {folder: weights(tmp_path / folder) for folder in before}
    for folder in before:
        shutil.rmtree(tmp_path / folder)
    again = Trainer(cfg, tmp_path, quiet=True).run()
    assert again.step == 4 and again.validation == first.validation
    for folder, meta in before.items():
        now = json.loads((tmp_path / folder / "metadata.json").read_text())
        assert (now["name"], now["metrics"]) == (meta["name"], meta["metrics"]), folder
        for key, value in weights(tmp_path / folder).items():
            assert torch.equal(value, weights_before[folder][key]), (folder, key)
    done = [r for r in read_progress(tmp_path / "progress.jsonl") if r["event"] == "done"]
    assert [r["name"] for r in done] == [before["bundle"]["name"]] * 2


def test_a_resumed_run_averages_as_an_uninterrupted_one(phantom_dir, tmp_path):
    cfg = config_from_dict(tiny_config(phantom_dir, steps=6, augment=True, network=INSTANCE, weight_average={"start": 1, "every": 2}))
    straight = Trainer(cfg, tmp_path / "straight", quiet=True).run()
    first = Trainer(cfg, tmp_path / "resumed", quiet=True)
    first.build()
    for _ in range(4):
        first.train_step()
        if first.weight_average.due(first.step):
            first.weight_average.update(first.method.inference_network().state_dict())
    first.checkpoint()
    del first
    second = Trainer(cfg, tmp_path / "resumed", quiet=True)
    resumed = second.run()
    assert second.weight_average.count == 3
    expected = weights(straight.bundle)
    for key, value in weights(resumed.bundle).items():
        torch.testing.assert_close(value, expected[key], rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="keep the recipe the run began with"):
        WeightAverage(2, 2).load_state_dict(second.weight_average.state_dict())


def test_a_network_with_running_statistics_is_refused(phantom_dir, tmp_path):
    cfg = config_from_dict(tiny_config(phantom_dir, weight_average={"start": 2, "every": 2}))  # tiny: modality BatchNorm
    with pytest.raises(ConfigError, match="running statistics.*modality_instance"):
        Trainer(cfg, tmp_path, quiet=True).build()

