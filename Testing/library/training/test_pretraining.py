"""Self-supervised pretraining (masked-volume reconstruction) before a run: the config block, the
masks, that it learns, and that the engine runs it once, logs it and leaves the bundle's keys alone."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_config

from MultiModalSegLib.errors import ConfigError
from MultiModalSegLib.networks import build_network
from MultiModalSegLib.training import Trainer
from MultiModalSegLib.training.config import config_from_dict
from MultiModalSegLib.training.pretraining import PretrainSpec, block_mask, pretrain_network

torch.set_num_threads(1)

TINY_TRANSFORMER = {"embed_dim": 8, "depths": [1, 1, 1, 1], "heads": [1, 1, 2, 2], "window": 2, "patch": [2, 4, 4]}
LSSC = {"network": {"name": "transformer_unet3d", "params": TINY_TRANSFORMER}, "method": "lssc", "method_params": {"eam_heads": 2}}


def test_the_config_block_is_checked_with_one_sentence():
    spec = PretrainSpec.from_config({"steps": 20})
    assert (spec.task, spec.lr, spec.mask_ratio, spec.mask_block, spec.warmup) == ("masked_reconstruction", 1e-3, 0.5, 4, 2)
    for bad in ({}, {"steps": 0}, {"steps": 5, "task": "jigsaw"}, {"steps": 5, "mask_ratio": 1.0}, {"steps": 5, "colour": 1}):
        with pytest.raises(ConfigError, match="pretrain"):
            PretrainSpec.from_config(bad)


def test_block_masks_hide_whole_cubes_at_about_the_ratio():
    mask = block_mask((4, 1, 8, 16, 16), 0.5, 4, torch.Generator().manual_seed(0))
    assert mask.shape == (4, 1, 8, 16, 16) and set(mask.unique().tolist()) == {0.0, 1.0}
    cubes = mask.reshape(4, 1, 2, 4, 4, 4, 4, 4).permute(0, 1, 2, 4, 6, 3, 5, 7).reshape(4, 1, 2, 4, 4, 64)
    assert torch.all(cubes.amin(-1) == cubes.amax(-1))  # constant within each 4x4x4 cube
    assert 0.3 < float(mask.mean()) < 0.7
    odd = block_mask((1, 1, 5, 6, 7), 0.5, 4, torch.Generator().manual_seed(1))
    assert odd.shape == (1, 1, 5, 6, 7)


def test_pretraining_trains_on_the_reconstruction_and_leaves_the_random_state_alone():
    """The masked-voxel error falls (most of it, in a few steps, from fitting the read-out), the
    network's keys are unchanged (the head is temporary) and no global random number is drawn."""
    torch.manual_seed(0)
    net = build_network("transformer_unet3d", out_channels=3, **TINY_TRANSFORMER)
    keys = set(net.state_dict())
    g = torch.Generator().manual_seed(2)
    smooth = torch.nn.functional.interpolate(torch.rand(8, 1, 4, 8, 8, generator=g), size=(16, 32, 32), mode="trilinear")
    data = {"CT": {"image": smooth[:4]}, "MR:unlabelled": {"image": 1 - smooth[4:]}}
    state = torch.get_rng_state()
    summary = pretrain_network(net, lambda step: data, PretrainSpec(steps=40, lr=3e-3), torch.device("cpu"))
    assert torch.equal(torch.get_rng_state(), state)
    assert summary["last_loss"] < 0.5 * summary["first_loss"], summary
    assert set(net.state_dict()) == keys  # the reconstruction head is not part of the network


def test_the_engine_pretrains_a_fresh_run_once_and_logs_it(phantom_dir, tmp_path):
    raw = tiny_config(phantom_dir, steps=2, checkpoint_every=1, threads=1, **LSSC)
    plain = Trainer(config_from_dict(raw), tmp_path / "plain", quiet=True)
    plain.build()
    pretrained = Trainer(config_from_dict({**raw, "pretrain": {"steps": 3, "lr": 1e-3}}), tmp_path / "pre", quiet=True)
    pretrained.build()
    assert pretrained.pretrained["steps"] == 3 and plain.pretrained is None
    before, after = plain.method.net.state_dict(), pretrained.method.net.state_dict()
    assert before.keys() == after.keys() and any(not torch.equal(before[k], after[k]) for k in before)
    assert set(pretrained.method.inference_network().state_dict()) == set(plain.method.inference_network().state_dict())
    result = pretrained.run()
    events = [json.loads(line) for line in (tmp_path / "pre" / "progress.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events][:2] == ["pretrain", "start"] and result.status == "done"
    # a resumed run does not pretrain again: its checkpoint holds the result
    longer = Trainer(config_from_dict({**raw, "steps": 3, "pretrain": {"steps": 3, "lr": 1e-3}}), tmp_path / "pre", quiet=True)
    longer.build()
    assert longer.pretrained is None and longer.step == 2
