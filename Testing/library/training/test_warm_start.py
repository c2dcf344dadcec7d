"""Warm start across U-Net-family methods (training/warm_start.py) and the config's ``init`` key."""

import dataclasses

import pytest
import torch
from conftest import tiny_config

from MultiModalSegLib.bundle import bundle_sha256
from MultiModalSegLib.errors import BundleError, ConfigError
from MultiModalSegLib.methods import get_method
from MultiModalSegLib.training import Trainer
from MultiModalSegLib.training.config import config_from_dict
from MultiModalSegLib.training.progress import read_progress
from MultiModalSegLib.training.warm_start import canonical_key, warm_start_method

MODALITIES = ["CT", "MR"]


def build(name: str, features=(4, 8, 16)) -> torch.nn.Module:
    method = get_method(name)
    spec = method.complete_network_spec({"name": "unet3d", "params": {"features": list(features)}}, MODALITIES, 5)
    torch.manual_seed(hash(name) % 1000)
    return method(spec, MODALITIES, 5)


def outputs(method: torch.nn.Module, modality: str) -> torch.Tensor:
    net = method.inference_network().eval()
    torch.manual_seed(0)
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        return net(x, modality)


@pytest.mark.parametrize(
    "key, expected",
    [
        ("encoder.0.norm1.norms.CT.weight", ("encoder.0.norm1.weight", "CT")),
        ("encoder.1.blocks.MR.conv1.conv.weight", ("encoder.1.conv1.conv.weight", "MR")),
        ("nets.CT.decoder.0.conv_block.norm2.bias", ("decoder.0.conv_block.norm2.bias", "CT")),
        ("backbone.unet.encoder.2.conv2.conv.weight", ("encoder.2.conv2.conv.weight", None)),
        ("encoder.3.0.blocks.MR.1.running_mean", ("encoder.3.norm1.running_mean", "MR")),
        ("encoder.3.1.0.conv.weight", ("encoder.3.conv2.conv.weight", None)),
        ("head.conv.conv.bias", ("head.conv.conv.bias", None)),
        ("encoders.MR.0.norm1.weight", ("encoder.0.norm1.weight", "MR")),
        ("heads.CT.conv.conv.weight", ("head.conv.conv.weight", "CT")),
    ],
)
def test_canonical_names(key, expected):
    assert canonical_key(key) == expected


@pytest.mark.parametrize("target", ["x_shaped", "y_shaped", "individual", "ummkd", "csa"])
def test_a_joint_network_carries_over_exactly(target):
    """Everything of a shared U-Net has a counterpart, so the warm-started network computes the
    source's function for every modality (no fresh layer, nothing averaged)."""
    source = build("joint")
    for p in source.parameters():  # non-trivial normalisation parameters and statistics
        p.data.add_(0.1 * torch.randn_like(p))
    for name, buf in source.inference_network().named_buffers():
        if "running_var" in name:
            buf.uniform_(0.5, 2.0)
    method = build(target)
    before = outputs(method, "MR")
    report = warm_start_method(method, source.inference_network().state_dict())
    assert not report.fresh and not report.averaged
    for modality in MODALITIES:
        torch.testing.assert_close(outputs(method, modality), outputs(source, modality))
    assert not torch.allclose(before, outputs(method, "MR"))


def test_per_modality_normalisation_into_a_shared_layer_is_averaged():
    source = build("ummkd")
    for p in source.parameters():
        p.data.add_(0.1 * torch.randn_like(p))
    method = build("joint")
    report = warm_start_method(method, source.inference_network().state_dict())
    assert report.averaged and not report.fresh
    src = source.inference_network().state_dict()
    mean = (src["encoder.0.norm1.norms.CT.weight"] + src["encoder.0.norm1.norms.MR.weight"]) / 2
    torch.testing.assert_close(method.inference_network().state_dict()["encoder.0.norm1.weight"], mean)


def test_cmc_takes_the_u_net_layers_and_keeps_its_own_modules_fresh():
    source = build("joint")
    spec = {"name": "cmc", "params": {"features": [4, 8, 16], "norm": "batch"}}  # the source's normalisation
    method = get_method("cmc")(get_method("cmc").complete_network_spec(spec, MODALITIES, 5), MODALITIES, 5)
    report = warm_start_method(method, source.inference_network().state_dict())
    assert report.fresh and all(k.startswith(("aware.", "fusion.")) for k in report.fresh)
    got, src = method.inference_network().state_dict(), source.inference_network().state_dict()
    for modality in MODALITIES:
        torch.testing.assert_close(got[f"encoders.{modality}.1.conv2.conv.weight"], src["encoder.1.conv2.conv.weight"])
        torch.testing.assert_close(got[f"heads.{modality}.conv.conv.bias"], src["head.conv.conv.bias"])
    net = method.inference_network().eval()
    f = torch.randn(1, 16, 2, 2, 2)
    with torch.no_grad():
        for modality in MODALITIES:  # its own modules start as pass-throughs
            torch.testing.assert_close(net.awareness(f, modality), f)
        torch.testing.assert_close(net.fuse(f, f), torch.nn.functional.leaky_relu(f, 0.01))
        x = torch.randn(1, 1, 16, 16, 16)
        # hence the source's function, but for a second leaky ReLU on the bottleneck's negative part
        src_net = source.inference_network().eval()
        for modality in MODALITIES:
            ours, theirs = net(x, modality), src_net(x, modality)
            assert torch.nn.functional.cosine_similarity(ours.flatten(), theirs.flatten(), dim=0) > 0.99


def test_other_widths_are_refused_by_name():
    source = build("joint", features=(4, 8, 16))
    method = build("joint", features=(8, 16, 32))
    with pytest.raises(ConfigError, match="does not fit this network.*same network and widths"):
        warm_start_method(method, source.inference_network().state_dict(), "the init bundle old.zip")


def test_config_init_starts_from_a_bundle_and_logs_it(phantom_dir, tiny_bundle, tmp_path):
    cfg = config_from_dict(tiny_config(phantom_dir, method="x_shaped", steps=1,
                                       init={"bundle": str(tiny_bundle), "sha256": bundle_sha256(tiny_bundle)}))
    trainer = Trainer(cfg, tmp_path, quiet=True)
    trainer.build()
    src = torch.load(tiny_bundle / "model.pt", weights_only=True)
    got = trainer.method.inference_network().state_dict()
    torch.testing.assert_close(got["encoder.0.blocks.MR.conv1.conv.weight"], src["encoder.0.conv1.conv.weight"])
    torch.testing.assert_close(got["encoder.0.blocks.MR.norm1.weight"], src["encoder.0.norm1.norms.MR.weight"])
    trainer.run()
    events = [r for r in read_progress(tmp_path / "progress.jsonl") if r["event"] == "warm_start"]
    assert len(events) == 1 and events[0]["method"] == "ummkd" and events[0]["fresh"] == 0


def test_config_init_from_an_ensemble_starts_from_its_first_member(phantom_dir, tiny_bundle, tmp_path):
    from MultiModalSegLib.bundle import load_bundle, save_bundle
    from MultiModalSegLib.bundle_members import combine_bundles

    first = load_bundle(tiny_bundle)
    second = {k: v + 1.0 if v.is_floating_point() else v for k, v in first.state_dict.items()}
    meta, state = combine_bundles([first, dataclasses.replace(first, state_dict=second)], name="pair", version="1.0.0", description="")
    pair = save_bundle(tmp_path / "pair", meta, state)
    trainer = Trainer(config_from_dict(tiny_config(phantom_dir, steps=1, init={"bundle": str(pair)})), tmp_path / "run", quiet=True)
    trainer.build()
    got = trainer.method.inference_network().state_dict()
    assert all(torch.equal(got[k], v) for k, v in first.state_dict.items())
    trainer.run()
    [event] = [r for r in read_progress(tmp_path / "run" / "progress.jsonl") if r["event"] == "warm_start"]
    assert event["member"] == 1 and event["members"] == 2 and event["fresh"] == 0


def test_an_ensemble_recipe_starts_each_member_from_the_init_ensembles_member_and_refuses_other_counts(phantom_dir, tiny_bundle, tmp_path):
    """``network.members`` 2 with ``init`` an ensemble of 2: member i from member i; from one network: one error
    (members started alike would stay alike)."""
    from MultiModalSegLib.bundle import load_bundle, member_state, save_bundle
    from MultiModalSegLib.bundle_members import combine_bundles

    first = load_bundle(tiny_bundle)
    second = {k: v + 1.0 if v.is_floating_point() else v for k, v in first.state_dict.items()}
    meta, state = combine_bundles([first, dataclasses.replace(first, state_dict=second)], name="pair", version="1.0.0", description="")
    pair = save_bundle(tmp_path / "pair", meta, state)
    network = {**tiny_config(phantom_dir)["network"], "members": 2}
    trainer = Trainer(config_from_dict(tiny_config(phantom_dir, steps=1, network=network, init={"bundle": str(pair)})),
                      tmp_path / "run", quiet=True)
    trainer.build()
    got = trainer.method.inference_network().state_dict()
    for i, source in enumerate((first.state_dict, second)):
        assert all(torch.equal(member_state(got, i)[k], v) for k, v in source.items())
    assert trainer.warm_start["members"] == 2 and "member" not in trainer.warm_start and trainer.warm_start["fresh"] == 0
    single = config_from_dict(tiny_config(phantom_dir, steps=1, network=network, init={"bundle": str(tiny_bundle)}))
    with pytest.raises(ConfigError, match=r"holds 1 network\(s\) and the recipe trains an ensemble of 2"):
        Trainer(single, tmp_path / "run2", quiet=True).build()


def test_config_init_with_a_wrong_sha256_names_the_bundle(phantom_dir, tiny_bundle, tmp_path):
    cfg = config_from_dict(tiny_config(phantom_dir, init={"bundle": str(tiny_bundle), "sha256": "0" * 64}))
    with pytest.raises(BundleError, match="sha256") as info:
        Trainer(cfg, tmp_path, quiet=True).build()
    assert str(tiny_bundle) in str(info.value)


def test_config_init_needs_a_bundle_key(phantom_dir):
    with pytest.raises(ConfigError, match='"init" must be'):
        config_from_dict(tiny_config(phantom_dir, init={"path": "x.zip"}))
