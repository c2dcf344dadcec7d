"""Batches made ahead in worker processes are the batches made between steps, in step order."""

import json

import numpy as np
import pytest
import torch
from conftest import synthesis_config

from MultiModalSegLib.errors import ConfigError
from MultiModalSegLib.training import Trainer
from MultiModalSegLib.training.batch_loader import step_batches, workers_available
from MultiModalSegLib.training.progress import read_progress

needs_fork = pytest.mark.skipif(not workers_available(), reason="worker processes are forked; this platform makes batches in-process")


def _config(**overrides):
    return synthesis_config(**{"polarity": {"MR": 0.5}, **overrides})


def _make(step):
    return {"CT": {"image": torch.full((1, 2), float(step))}}


@pytest.mark.parametrize("workers", [0, 2])
def test_the_steps_come_in_order_from_start_to_stop(workers):
    with step_batches(_make, 3, 9, workers) as source:
        steps = [int(batch["CT"]["image"][0, 0]) for batch in source]
    assert steps == [3, 4, 5, 6, 7, 8]


def test_nothing_is_made_past_the_last_step():
    with step_batches(_make, 5, 5, 2) as source:
        assert list(source) == []


@needs_fork
def test_workers_make_the_synthesised_batches_the_main_process_makes(tmp_path):
    trainer = Trainer(_config(), tmp_path, quiet=True)
    trainer.build()
    with step_batches(trainer.step_batches, 2, 6, workers=2) as source:
        ahead = list(source)
    for step, batches in zip(range(2, 6), ahead, strict=True):
        made_here = trainer.step_batches(step)
        assert batches.keys() == made_here.keys()
        for modality in made_here:
            for key in ("image", "label"):
                assert torch.equal(batches[modality][key], made_here[modality][key]), (step, modality, key)


@needs_fork
def test_a_run_with_workers_trains_exactly_as_one_without(tmp_path):
    losses = {}
    for workers in (0, 2):
        out = tmp_path / f"w{workers}"
        Trainer(_config(steps=4, workers=workers, log_every=1, checkpoint_every=100), out, quiet=True).run()
        losses[workers] = [r["losses"]["loss"] for r in read_progress(out / "progress.jsonl") if r["event"] == "step"]
        meta = json.loads((out / "bundle" / "metadata.json").read_text())
        assert meta["training"]["config"]["workers"] == workers  # recorded, as threads and device are
    assert len(losses[0]) == 4
    np.testing.assert_allclose(losses[2], losses[0], rtol=1e-6, atol=1e-7)


def test_a_run_resumes_under_another_worker_count(tmp_path):
    Trainer(_config(steps=2, checkpoint_every=1), tmp_path, quiet=True).run()
    resumed = Trainer(_config(steps=3, checkpoint_every=1, workers=1), tmp_path, quiet=True)
    resumed.build()
    assert resumed.step == 2


@pytest.mark.parametrize("bad", [-1, 1.5, True, "2"])
def test_a_bad_worker_count_is_one_sentence(bad):
    with pytest.raises(ConfigError, match="workers"):
        _config(workers=bad)
