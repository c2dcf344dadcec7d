"""Ensemble bundles (``MultiModalSegLib.bundle_members``, ``networks.member_ensemble``): the network averages
its members' probabilities, the bundle keeps each member's weights and provenance, incompatible members and
broken ensembles are refused, and every command that takes a bundle takes one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import load_script

from MultiModalSegLib.bundle import load_bundle, save_bundle
from MultiModalSegLib.bundle_members import combine_bundles, member_bundle
from MultiModalSegLib.errors import BundleError
from MultiModalSegLib.inference import Segmenter
from MultiModalSegLib.io import read_image
from MultiModalSegLib.networks.exported import build_inference_network
from MultiModalSegLib.networks.member_ensemble import MemberEnsemble
from MultiModalSegLib.provenance import trained_case_names


def _other(tiny_bundle: Path, tmp: Path, **metadata) -> Path:
    """A second member: the tiny bundle's weights moved by noise, trained (as recorded) on another case."""
    bundle = load_bundle(tiny_bundle)
    generator = torch.Generator().manual_seed(3)
    state = {k: v + 0.05 * torch.randn(v.shape, generator=generator) if v.is_floating_point() else v
             for k, v in bundle.state_dict.items()}
    meta = {k: v for k, v in bundle.metadata.items() if k not in ("model_sha256", "format_version")}
    meta["name"] = "tiny-other"
    meta["training"] = json.loads(json.dumps(meta["training"]))
    meta["training"]["datasets"][0]["training"] = ["other_case"]
    meta.update(metadata)
    return save_bundle(tmp / "other", meta, state)


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory, tiny_bundle) -> dict:
    tmp = tmp_path_factory.mktemp("ensemble")
    other = _other(tiny_bundle, tmp)
    members = [load_bundle(tiny_bundle), load_bundle(other)]
    meta, state = combine_bundles(members, name="tiny-ensemble", version="1.0.0", description="two tiny members")
    return {"path": save_bundle(tmp / "ensemble.zip", meta, state), "members": members, "other": other}


def test_network_is_the_log_of_the_members_mean_probabilities():
    torch.manual_seed(0)
    members = [torch.nn.Conv3d(1, 3, 1) for _ in range(3)]

    class Net(torch.nn.Module):
        def __init__(self, conv):
            super().__init__()
            self.conv = conv

        def forward(self, x, modality=None):
            return self.conv(x)

    net = MemberEnsemble([Net(m) for m in members])
    x = torch.randn(1, 1, 4, 4, 4)
    expected = sum(torch.softmax(m(x), 1) for m in members) / 3
    assert torch.allclose(torch.softmax(net(x, "CT"), 1), expected, atol=1e-6)
    with pytest.raises(ValueError, match="at least two"):
        MemberEnsemble([Net(members[0])])


def test_bundle_keeps_every_member_and_their_provenance(ensemble, tiny_bundle):
    bundle = load_bundle(ensemble["path"])
    first, second = ensemble["members"]
    assert [(m["name"], m["model_sha256"]) for m in bundle.metadata["members"]] == [
        (first.name, first.metadata["model_sha256"]), ("tiny-other", second.metadata["model_sha256"])]
    # a scan any member trained on counts as trained on; each member keeps its own record
    assert trained_case_names(bundle.metadata) == trained_case_names(first.metadata) | {"other_case"}
    for i, member in enumerate(ensemble["members"]):
        alone = member_bundle(bundle, i)
        assert alone.state_dict.keys() == member.state_dict.keys()
        assert all(torch.equal(alone.state_dict[k], member.state_dict[k]) for k in member.state_dict)
        assert trained_case_names(alone.metadata) == trained_case_names(member.metadata)
        assert "members" not in alone.metadata
    net = build_inference_network(bundle.metadata)
    assert isinstance(net, MemberEnsemble) and len(net.members) == 2
    net.load_state_dict(bundle.state_dict, strict=True)
    with pytest.raises(BundleError, match="has 2 members; it has no member 3"):
        member_bundle(bundle, 2)


def test_segmenter_averages_the_members(ensemble, tiny_bundle, phantom_dir):
    volume = read_image(phantom_dir / "imagesTr" / "ct_000.nii.gz")
    probs = [Segmenter(p, device="cpu", amp=False).segment(volume, "CT", probabilities=True).probabilities
             for p in (tiny_bundle, ensemble["other"], ensemble["path"])]
    mean = (probs[0] + probs[1]) / 2
    # the members' probabilities are averaged in each window, then blended: the mean of the two models' own
    assert np.abs(probs[2] - mean).mean() < 1e-3
    assert np.abs(probs[2] - mean).mean() < np.abs(probs[0] - probs[1]).mean()


def test_incompatible_members_and_broken_ensembles_are_refused(ensemble, tiny_bundle, tmp_path):
    first = load_bundle(tiny_bundle)
    coarse = load_bundle(_other(tiny_bundle, tmp_path, spacing=[8.0, 8.0, 8.0]))
    with pytest.raises(BundleError, match="its spacing differs"):
        combine_bundles([first, coarse], name="x", version="1.0.0", description="")
    with pytest.raises(BundleError, match="at least two bundles"):
        combine_bundles([first], name="x", version="1.0.0", description="")
    with pytest.raises(BundleError, match="is itself an ensemble"):
        combine_bundles([first, load_bundle(ensemble["path"])], name="x", version="1.0.0", description="")
    # an ensemble whose records do not describe its weights: one clear error on loading, before any use
    bundle = load_bundle(ensemble["path"])
    meta = {k: v for k, v in bundle.metadata.items() if k not in ("model_sha256", "format_version")}
    meta["members"] = meta["members"] + [meta["members"][0]]
    with pytest.raises(BundleError, match=r"member 3 \(.*\) has no weights; the ensemble is inconsistent"):
        load_bundle(save_bundle(tmp_path / "broken", meta, bundle.state_dict))
    meta["members"] = meta["members"][::-1][1:]  # the two records swapped: each names the other's weights
    with pytest.raises(BundleError, match="member 1 .* does not match the sha256 its record gives"):
        load_bundle(save_bundle(tmp_path / "swapped", meta, bundle.state_dict))
    meta["members"] = bundle.metadata["members"][:1] + bundle.metadata["members"][:1]
    meta["members"][1] = {**meta["members"][1], "model_sha256": bundle.metadata["members"][1]["model_sha256"]}
    with_stray = {**bundle.state_dict, "stray.weight": torch.zeros(1)}
    with pytest.raises(BundleError, match="'stray.weight' and 0 more belong to no listed member"):
        load_bundle(save_bundle(tmp_path / "stray", meta, with_stray))
    meta["members"] = meta["members"][:1]
    with pytest.raises(BundleError, match="members"):
        save_bundle(tmp_path / "one", meta, bundle.state_dict)


def test_script_combines_and_refuses_with_one_line(tiny_bundle, ensemble, tmp_path, capsys):
    script = load_script("training/ensemble_bundle.py")
    out = tmp_path / "pair"
    assert script.main(["--member", str(tiny_bundle), "--member", str(ensemble["other"]), "--name", "pair",
                        "--version", "2.0.0", "--description", "d", "--out", str(out)]) == 0
    assert load_bundle(out).metadata["members"][1]["name"] == "tiny-other"
    assert script.main(["--member", str(tiny_bundle), "--name", "p", "--version", "1.0.0", "--description", "d",
                        "--out", str(tmp_path / "single")]) == 2
    assert "at least two bundles" in capsys.readouterr().err
    assert not (tmp_path / "single").exists()
    shutil.rmtree(out)


def test_member_records_are_provenance_and_may_name_no_path(ensemble):
    from MultiModalSegLib.provenance import path_like_strings, provenance_sections

    meta = json.loads(json.dumps(load_bundle(ensemble["path"]).metadata))
    assert path_like_strings(provenance_sections(meta)) == []
    meta["members"][1]["training"]["config_file"] = "/home/someone/recipes/tiny.json"
    assert path_like_strings(provenance_sections(meta)) == ["members[1].training.config_file: /home/someone/recipes/tiny.json"]
