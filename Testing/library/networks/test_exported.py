"""Inference builds each method's exported network from a bundle's metadata without the method's
training code, and builds the very module training exports."""

from __future__ import annotations

import pytest
import torch

from MultiModalSegLib.errors import BundleError
from MultiModalSegLib.methods import METHODS, build_method
from MultiModalSegLib.networks.exported import EXPORTED_NETWORKS, build_inference_network

MODALITIES = ["CT", "MR"]
EXTRA = {"mulmodseg": {"embedding": "onehot", "controller_hidden": 16}}
NETWORKS = {  # the smallest network each method accepts
    "csa": {"name": "unet3d", "params": {"features": [4, 8, 16]}},
    "lssc": {"name": "transformer_unet3d",
             "params": {"embed_dim": 4, "depths": [1, 1, 1, 1], "heads": [1, 1, 2, 2], "window": 2, "patch": [1, 2, 2]}},
}  # fmt: skip


def test_every_registered_method_has_an_exported_network():
    assert sorted(EXPORTED_NETWORKS) == sorted(METHODS), "add the new method's network to networks/exported.py"


@pytest.mark.parametrize("name", sorted(METHODS))
def test_inference_builds_the_network_training_exports(name):
    torch.manual_seed(0)
    cls = METHODS[name]
    network = NETWORKS.get(name) or cls.reference_network([4, 8])
    method = build_method(name, network, MODALITIES, 3, **EXTRA.get(name, {}))
    trained = method.inference_network().eval()
    metadata = {"method": name, "network": method.network_spec, "modalities": {m: {} for m in MODALITIES}}
    rebuilt = build_inference_network(metadata).eval()
    assert type(rebuilt) is type(trained)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in trained.state_dict().items()}
    rebuilt.load_state_dict(trained.state_dict(), strict=True)
    x = torch.rand(1, 1, 16, 16, 16)
    with torch.no_grad():
        for m in MODALITIES:
            torch.testing.assert_close(rebuilt(x, m), trained(x, m))


def test_an_unknown_method_is_a_bundle_error():
    with pytest.raises(BundleError, match="'cmc-typo'.*update MultiModalSegLib"):
        build_inference_network({"method": "cmc-typo", "network": {}, "modalities": {"CT": {}}})
