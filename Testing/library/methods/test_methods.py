"""Training methods: registry, training steps, UMMKD's total loss, what each method shares."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_LSSC_NETWORK

from MultiModalSegLib.errors import ConfigError, InputError
from MultiModalSegLib.losses import as_target, kd_loss
from MultiModalSegLib.methods import (
    METHODS,
    ModalityRouter,
    build_inference_network,
    build_method,
    get_method,
)
from MultiModalSegLib.networks import ModalityNorm

torch.set_num_threads(1)

NET = {"name": "unet3d", "params": {"features": [4, 8]}}
N_CLASSES = 3
MODALITIES = ["CT", "MR"]


def make(name: str, network: dict = NET, seed: int = 0, **params):
    torch.manual_seed(seed)
    return build_method(name, network, MODALITIES, N_CLASSES, **params)


def batches(seed: int = 0, size: int = 8) -> dict[str, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for i, m in enumerate(MODALITIES):
        label = torch.randint(0, N_CLASSES, (2, 1, size, size, size), generator=g).float()
        image = torch.rand(2, 1, size, size, size, generator=g) + 0.3 * label + i
        out[m] = {"image": image, "label": label}
    return out


def test_registry_holds_the_three_methods():
    assert {"individual", "joint", "ummkd"} <= set(METHODS)
    for name in ("individual", "joint", "ummkd"):
        assert get_method(name).name == name


def test_unknown_method_is_a_config_error():
    with pytest.raises(ConfigError, match="cmc-typo"):
        get_method("cmc-typo")
    with pytest.raises(ConfigError):
        build_method("cmc-typo", NET, MODALITIES, N_CLASSES)
    with pytest.raises(ConfigError):
        build_inference_network({"method": "cmc-typo", "network": {}, "modalities": {"CT": {}}})


@pytest.mark.parametrize("name", ["individual", "joint", "ummkd"])
@pytest.mark.parametrize("network", ["unet3d", "unet2.5d"])
def test_training_step_returns_a_finite_loss_that_backpropagates(name, network):
    method = make(name, {"name": network, "params": {"features": [4, 8]}}).train()
    out = method.training_step(batches())
    assert {"loss", "seg_CT", "seg_MR"} <= set(out)
    loss = out["loss"]
    assert loss.dim() == 0 and torch.isfinite(loss) and float(loss.detach()) > 0
    loss.backward()
    grads = [p.grad for p in method.parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    assert all(torch.isfinite(g).all() for g in grads if g is not None)


@pytest.mark.parametrize("name", ["individual", "joint"])
def test_baseline_loss_is_the_sum_of_segmentation_losses(name):
    out = make(name).train().training_step(batches(1))
    assert "kd" not in out
    torch.testing.assert_close(out["loss"], out["seg_CT"] + out["seg_MR"])


def test_network_spec_is_completed_from_the_method():
    spec = make("ummkd").network_spec
    assert spec["name"] == "unet3d"
    assert spec["params"] == {"features": [4, 8], "out_channels": N_CLASSES, "modalities": MODALITIES, "norm": "modality_batch"}
    assert make("joint").network_spec["params"]["norm"] == "batch"
    assert NET["params"] == {"features": [4, 8]}  # the caller's dict is not modified


@pytest.mark.parametrize("alpha", [0.5, 1.7])
def test_ummkd_total_is_segmentation_plus_half_alpha_kd(alpha):
    method = make("ummkd", alpha=alpha, temperature=3.0).train()
    data = batches(2)
    out = method.training_step(data)
    assert float(out["kd"].detach()) > 0
    expected = out["seg_CT"] + out["seg_MR"] + alpha / 2 * out["kd"]
    torch.testing.assert_close(out["loss"], expected)
    # The KD term is kd_loss on the two modalities' logits with the method's temperature.
    with torch.no_grad():
        logits = {m: method.inference_network()(data[m]["image"], m) for m in MODALITIES}
        kd = kd_loss(logits["CT"], as_target(data["CT"]["label"]), logits["MR"], as_target(data["MR"]["label"]), 3.0)
        kd_t2 = kd_loss(logits["CT"], data["CT"]["label"], logits["MR"], data["MR"]["label"], 2.0)
    torch.testing.assert_close(out["kd"].detach(), kd, rtol=1e-4, atol=1e-6)
    assert abs(float(kd_t2) - float(kd)) > 1e-6


def test_ummkd_l2_term_is_eta_times_the_squared_norm_of_every_parameter():
    data = batches(4)
    plain = make("ummkd").train().training_step(data)
    assert "l2" not in plain  # eta 0 by default: the configs use the optimiser's weight decay
    method = make("ummkd", l2_weight=1e-2).train()
    out = method.training_step(data)
    squares = sum(float(p.detach().pow(2).sum()) for p in method.net.parameters())
    assert float(out["l2"].detach()) == pytest.approx(squares, rel=1e-5)
    torch.testing.assert_close(out["loss"], out["seg_CT"] + out["seg_MR"] + 0.25 * out["kd"] + 1e-2 * out["l2"])
    torch.testing.assert_close(out["loss"].detach(), plain["loss"].detach() + 1e-2 * out["l2"].detach())
    # its gradient is 2 eta Theta on every parameter (here the only term)
    method.zero_grad()
    (1e-2 * out["l2"]).backward()
    for p in method.net.parameters():
        torch.testing.assert_close(p.grad, 2e-2 * p.detach())


def test_ummkd_class_balanced_cross_entropy_is_an_option():
    from MultiModalSegLib.losses import class_balanced_cross_entropy, dice_ce_loss

    data = batches(5)
    method = make("ummkd", ce_weighting="class_balanced").train()
    out = method.training_step(data)
    with torch.no_grad():
        logits = method.inference_network()(data["CT"]["image"], "CT")
        target = as_target(data["CT"]["label"])
        expected = dice_ce_loss(1.0, 0.0)(logits, target) + class_balanced_cross_entropy(logits, target)
    torch.testing.assert_close(out["seg_CT"].detach(), expected, rtol=1e-4, atol=1e-6)
    for bad in ({"ce_weighting": "median"}, {"l2_weight": -1.0}):
        with pytest.raises(ConfigError):
            make("ummkd", **bad)


def test_ummkd_kd_term_gets_gradient():
    method = make("ummkd").train()
    out = method.training_step(batches(3))
    out["kd"].backward()
    head = method.inference_network().head.conv.conv.weight
    assert head.grad is not None and head.grad.abs().sum() > 0


def test_ummkd_uses_modality_specific_norms_and_refuses_shared_ones():
    method = make("ummkd")
    norms = [m for m in method.modules() if isinstance(m, ModalityNorm)]
    assert norms and all(m.modalities == MODALITIES for m in norms)
    assert make("ummkd", {"name": "unet3d", "params": {"features": [4, 8], "norm": "modality_instance"}})
    for norm in ("batch", "instance"):
        with pytest.raises(ConfigError, match="modality"):
            make("ummkd", {"name": "unet3d", "params": {"features": [4, 8], "norm": norm}})


def parameter_ptrs(module: torch.nn.Module) -> set[int]:
    return {p.data_ptr() for p in module.parameters()}


def test_individual_builds_independent_networks():
    method = make("individual")
    router = method.inference_network()
    assert isinstance(router, ModalityRouter) and sorted(router.nets) == MODALITIES
    ct, mr = router.nets["CT"], router.nets["MR"]
    assert ct is not mr
    assert parameter_ptrs(ct).isdisjoint(parameter_ptrs(mr))
    assert len(parameter_ptrs(method)) == len(parameter_ptrs(ct)) + len(parameter_ptrs(mr))
    # A CT-only loss trains the CT network only.
    data = batches(4)
    loss = method.seg_loss(method.logits(data["CT"]["image"], "CT"), as_target(data["CT"]["label"]))
    loss.backward()
    assert all(p.grad is not None for p in ct.parameters())
    assert all(p.grad is None for p in mr.parameters())


def test_individual_router_rejects_unknown_modalities():
    router = make("individual").inference_network().eval()
    x = torch.rand(1, 1, 8, 8, 8)
    assert router(x, "MR").shape == (1, N_CLASSES, 8, 8, 8)
    with pytest.raises(InputError, match="PET"):
        router(x, "PET")
    with pytest.raises(InputError):
        router(x)
    assert router.divisor == 2


def test_joint_shares_every_parameter():
    method = make("joint")
    net = method.inference_network()
    assert not isinstance(net, ModalityRouter)
    assert parameter_ptrs(method) == parameter_ptrs(net)
    data = batches(5)
    loss = method.seg_loss(method.logits(data["MR"]["image"], "MR"), as_target(data["MR"]["label"]))
    loss.backward()
    assert all(p.grad is not None for p in net.parameters())  # an MR loss reaches every parameter
    net.eval()
    x = torch.rand(1, 1, 8, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(net(x, "CT"), net(x, "MR"))


@pytest.mark.parametrize("name", ["individual", "joint", "ummkd"])
@pytest.mark.parametrize("network", ["unet3d", "unet2d"])
def test_inference_network_is_rebuilt_from_metadata(name, network):
    method = make(name, {"name": network, "params": {"features": [4, 8]}})
    metadata = {"method": name, "network": method.network_spec, "modalities": {"CT": {}, "MR": {}}}
    rebuilt = build_inference_network(metadata)
    trained = method.inference_network()
    assert type(rebuilt) is type(trained)
    assert list(rebuilt.state_dict()) == list(trained.state_dict())
    rebuilt.load_state_dict(trained.state_dict(), strict=True)
    rebuilt.eval()
    trained.eval()
    x = torch.rand(1, 1, 4, 8, 8)
    with torch.no_grad():
        for m in MODALITIES:
            torch.testing.assert_close(rebuilt(x, m), trained(x, m))


# methods whose networks are not a U-Net (CSA's needs three levels: see the default above)
FLOAT16_NETWORKS = {"lssc": TINY_LSSC_NETWORK}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_gives_a_finite_loss_under_float16_autocast(name):
    """The CUDA path trains under float16 autocast (``device.autocast``); the CPU runs the same
    arithmetic here, so a loss that overflows in float16 shows without a GPU."""
    network = FLOAT16_NETWORKS.get(name, {"name": "unet3d", "params": {"features": [4, 8, 16]}})
    method = make(name, network).train()
    big = {m: {"image": 40.0 * b["image"], "label": b["label"]} for m, b in batches(size=32).items()}
    with torch.autocast("cpu", dtype=torch.float16):
        out = method.training_step(big)
    assert all(torch.isfinite(v).all() for v in out.values()), {k: float(v) for k, v in out.items()}
