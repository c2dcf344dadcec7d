import math

import pytest
import torch

from MultiModalSegLib.errors import ConfigError, InputError
from MultiModalSegLib.losses import as_target
from MultiModalSegLib.methods import build_inference_network, build_method
from MultiModalSegLib.networks.cmc import CMCNetwork

NET = {"name": "cmc", "params": {"features": [4, 8, 16]}}
SHAPE = (2, 1, 8, 16, 16)


def _method(**params):
    torch.manual_seed(0)
    return build_method("cmc", NET, ["CT", "MR"], 3, **params)


def _batches(seed: int = 0, unlabelled: bool = True) -> dict:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for m in ("CT", "MR"):
        label = torch.zeros(SHAPE)
        label[:, :, 2:6, 4:10, 4:10] = 1
        label[:, :, 2:6, 10:14, 4:10] = 2
        out[m] = {"image": label / 2 + 0.1 * torch.randn(SHAPE, generator=g), "label": label}
        if unlabelled:
            out[f"{m}:unlabelled"] = {"image": torch.randn(SHAPE, generator=g)}
    return out


def _params(module):
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def test_inference_takes_one_volume_of_one_modality():
    net = _method().inference_network().eval()
    assert isinstance(net, CMCNetwork)
    x = torch.randn(1, 1, 8, 16, 16)
    with torch.no_grad():
        ct, mr = net(x, "CT"), net(x, "MR")
    assert ct.shape == mr.shape == (1, 3, 8, 16, 16)
    assert not torch.allclose(ct, mr)  # each modality has its own encoder and decoder
    with pytest.raises(InputError, match="PET"):
        net(x, "PET")


def test_exported_network_is_rebuilt_from_bundle_metadata():
    method = _method()
    meta = {"method": "cmc", "network": method.network_spec, "modalities": {"CT": {}, "MR": {}}}
    rebuilt = build_inference_network(meta)
    rebuilt.load_state_dict(method.inference_network().state_dict())
    x = torch.randn(1, 1, 8, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(x, "MR"), method.inference_network().eval()(x, "MR"))


def test_single_input_path_is_the_trained_one():
    """With single_input_weight 1 the supervised loss is exactly the inference network's loss."""
    method = _method(single_input_weight=1.0)
    batches = _batches(unlabelled=False)
    losses = method.training_step(batches)
    for m in ("CT", "MR"):
        expected = method.seg_loss(method.inference_network()(batches[m]["image"], m), as_target(batches[m]["label"]))
        torch.testing.assert_close(losses[f"seg_{m}"], expected)


def test_total_uses_the_ramp_weights():
    method = _method()
    batches = _batches()
    for step, total in ((0, 10), (5, 10), (10, 10)):
        method.set_progress(step, total)
        torch.manual_seed(0)
        losses = method.training_step(batches)
        t = step / total
        expected = losses["seg_CT"] + losses["seg_MR"] + 0.1 * math.exp(-5 * (1 - t)) * losses["csc"] + 0.1 * math.exp(-5 * t) * losses["cac"]
        torch.testing.assert_close(losses["loss"], expected)


def test_no_unlabelled_batches_means_no_cac_term():
    losses = _method().training_step(_batches(unlabelled=False))
    assert "cac" not in losses and torch.isfinite(losses["loss"])


@pytest.mark.parametrize("term", ["cac", "csc"])
def test_semi_supervised_terms_alone_change_the_weights(term):
    method = _method()
    method.set_progress(0, 10)
    before = _params(method)
    opt = torch.optim.SGD(method.parameters(), lr=1.0)
    losses = method.training_step(_batches())
    assert losses[term].requires_grad
    losses[term].backward()
    opt.step()
    after = _params(method)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    # both modalities' encoders are moved by the cross-modality term
    for m in ("CT", "MR"):
        assert any(k.startswith(f"net.encoders.{m}.") for k in changed), (term, m)
    if term == "cac":  # predictions: decoders, awareness modules and the shared fusion layer train too
        for prefix in ("net.decoders.CT.", "net.decoders.MR.", "net.aware.CT.", "net.fusion."):
            assert any(k.startswith(prefix) for k in changed), prefix


def test_pretrained_encoder_is_loaded_into_every_encoder(tmp_path):
    source = _method()
    path = tmp_path / "encoder.pt"
    state = {k: torch.full_like(v, 0.25) for k, v in source.net.encoders["CT"].state_dict().items()}
    torch.save(state, path)
    method = _method(pretrained_encoder=str(path))
    for m in ("CT", "MR"):
        for v in method.net.encoders[m].state_dict().values():
            assert torch.all(v == 0.25)
    with pytest.raises(ConfigError, match="does not exist"):
        _method(pretrained_encoder=str(tmp_path / "missing.pt"))


def test_cac_pairs_class_prototypes_by_default_and_sample_j_for_paired_data():
    from MultiModalSegLib.losses.cmc import paired_cac_loss, prototype_cac_loss

    batches = _batches(3)
    unlabelled = {m: batches[f"{m}:unlabelled"]["image"] for m in ("CT", "MR")}
    for pairing in ("prototypes", "paired"):
        method = _method(cac_pairing=pairing) if pairing != "prototypes" else _method()
        assert method.cac_pairing == pairing and method.reduction == "mean"
        torch.manual_seed(0)
        got = method.cac(unlabelled)
        with torch.no_grad():
            logits, aware = method._cross(unlabelled)
            expected = (prototype_cac_loss(aware["CT"], logits["CT"], aware["MR"], logits["MR"]) if pairing == "prototypes"
                        else paired_cac_loss(logits["CT"], logits["MR"]))
        torch.testing.assert_close(got.detach(), expected)
        assert float(expected) > 0


def test_mean_reduction_keeps_the_ramp_weights_below_the_supervised_loss():
    """At its largest weight (alpha = 0.1, the end of training) the averaged L_CSC moves the
    encoders less than L_Sup; summed over the channels (the printed Eq. 1) it moves them more."""
    ratios = {}
    for reduction in ("mean", "sum"):
        method = _method(reduction=reduction)
        losses, f_ds = method.supervised(_batches(4, unlabelled=False))
        encoders = [p for name, p in method.named_parameters() if name.startswith("net.encoders.")]
        g_sup = torch.autograd.grad(sum(losses.values()), encoders, retain_graph=True)
        g_csc = torch.autograd.grad(0.1 * method.csc(f_ds), encoders)
        ratios[reduction] = float(torch.stack([g.norm() for g in g_csc]).norm() / torch.stack([g.norm() for g in g_sup]).norm())
    assert ratios["mean"] < 1.0 < ratios["sum"]
    assert ratios["sum"] == pytest.approx(16 * ratios["mean"], rel=1e-4)  # 16 channels in F_ds


def test_bad_configuration_is_refused():
    with pytest.raises(ConfigError, match="cac_pairing"):
        _method(cac_pairing="sample")
    with pytest.raises(ConfigError, match="reduction"):
        _method(reduction="max")
    with pytest.raises(ConfigError, match="single_input_weight"):
        _method(single_input_weight=2.0)
    with pytest.raises(ConfigError, match="network name"):
        build_method("cmc", {"name": "unet2d", "params": {}}, ["CT", "MR"], 3)
