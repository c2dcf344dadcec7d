import numpy as np
import pytest
import torch
from conftest import tiny_config

from MultiModalSegLib.errors import ConfigError, InputError
from MultiModalSegLib.methods import build_inference_network, build_method
from MultiModalSegLib.methods.mulmodseg import OneVsAllLoss
from MultiModalSegLib.networks.mulmodseg import apply_dynamic_heads, n_dynamic_params
from MultiModalSegLib.text_embeddings import class_embeddings
from MultiModalSegLib.training import Trainer
from MultiModalSegLib.training.config import config_from_dict

LABELS = ["liver", "spleen", "kidney_right", "kidney_left"]
TINY = {"name": "unet3d", "params": {"features": [4, 8, 16]}}


def make(embedding="onehot", network=TINY, **kw):
    torch.manual_seed(0)
    return build_method("mulmodseg", network, ["CT", "MR"], 5, embedding=embedding, label_names=LABELS, **kw)


def batch(seed, shape=(2, 1, 8, 16, 16)):
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.randn(shape, generator=g), "label": torch.randint(0, 5, shape, generator=g)}


def test_controller_and_dynamic_head_shapes():
    method = make(controller_hidden=32)
    net = method.net
    assert n_dynamic_params(8) == (8 * 8 + 8) + (8 * 8 + 8) + (8 + 1)
    x = batch(0)["image"]
    enc_last, pre = net.backbone(x, "CT")
    assert enc_last.shape[:2] == (2, 16) and pre.shape == (2, 8, 8, 16, 16)
    joint = torch.cat([net.embeddings[0].expand(2, 4, -1), enc_last.mean((2, 3, 4))[:, None].expand(2, 4, -1)], -1)
    assert joint.shape == (2, 4, 6 + 16)
    assert net.controller(joint).shape == (2, 4, 153)
    assert net.class_logits(x, "CT").shape == (2, 4, 8, 16, 16)
    out = net(x, "CT")
    assert out.shape == (2, 5, 8, 16, 16) and torch.all(out[:, 0] == 0)


def test_dynamic_heads_equal_a_numpy_loop():
    rng = np.random.default_rng(1)
    feats, theta = rng.normal(size=(2, 8, 3, 4, 5)), rng.normal(size=(2, 3, 153))
    got = apply_dynamic_heads(torch.tensor(feats), torch.tensor(theta), 8).numpy()
    expected = np.zeros((2, 3, 3, 4, 5))
    for b in range(2):
        for k in range(3):
            t = theta[b, k]
            w1, b1 = t[:64].reshape(8, 8), t[64:72]
            w2, b2 = t[72:136].reshape(8, 8), t[136:144]
            w3, b3 = t[144:152].reshape(1, 8), t[152:153]
            v = feats[b].reshape(8, -1)
            h = np.maximum(w1 @ v + b1[:, None], 0)
            h = np.maximum(w2 @ h + b2[:, None], 0)
            expected[b, k] = (w3 @ h + b3[:, None]).reshape(3, 4, 5)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)


def test_label_map_is_the_most_confident_class_above_one_half_else_background():
    z = torch.tensor([[-1.0, -2.0, -0.5, -3.0], [0.2, 1.5, -1.0, 0.9], [2.0, -1.0, 0.1, 0.0]]).T[None]  # [1, K=4, 3]
    logits = torch.cat([torch.zeros_like(z[:, :1]), z], 1)
    p = torch.sigmoid(z)[0]
    expected = torch.where(p.amax(0) > 0.5, p.argmax(0) + 1, torch.zeros(3, dtype=torch.long))
    assert logits.argmax(1)[0].tolist() == expected.tolist() == [0, 2, 1]


def test_one_vs_all_loss_equals_numpy_bce_plus_dice():
    rng = np.random.default_rng(2)
    z = rng.normal(size=(2, 4, 3, 5, 6))
    label = rng.integers(0, 5, size=(2, 1, 3, 5, 6))
    got = float(OneVsAllLoss()(torch.tensor(z), torch.tensor(label)))
    t = np.stack([(label[:, 0] == k) for k in range(1, 5)], 1).astype(float)
    bce = np.mean(np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z))))
    p = 1 / (1 + np.exp(-z))
    axes = (0, 2, 3, 4)
    dice = 1 - (2 * (p * t).sum(axes) + 1e-5) / (p.sum(axes) + t.sum(axes) + 1e-5)
    assert got == pytest.approx(bce + dice.mean(), rel=1e-5)


def test_embeddings_are_frozen_and_the_rest_trains():
    method = make()
    emb = method.net.embeddings.clone()
    ctrl = method.net.controller[0].weight.detach().clone()
    assert not method.net.embeddings.requires_grad
    assert all(p is not method.net.embeddings for p in method.parameters())
    opt = torch.optim.AdamW(method.parameters(), lr=0.01)
    method.training_step({"CT": batch(3)})["loss"].backward()
    opt.step()
    assert torch.equal(method.net.embeddings, emb)
    assert not torch.equal(method.net.controller[0].weight, ctrl)
    assert "embeddings" in method.inference_network().state_dict()


def test_other_modalitys_prompt_gives_another_output():
    """Table 7 of the paper: the same image with the MR prompt instead of the CT one."""
    method = make().eval()
    x = batch(4)["image"]
    with torch.no_grad():
        ct, ct_again, mr_prompt = method.net(x, "CT"), method.net(x, "CT"), method.net(x, "CT", prompt="MR")
    assert torch.equal(ct, ct_again)
    assert float((ct - mr_prompt).abs().max()) > 1e-4


def test_text_embeddings_are_stored_and_the_bundle_network_is_rebuilt_from_metadata(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    method = make("text").eval()
    params = method.network_spec["params"]
    assert params["embedding_source"] == "text" and params["embedding_dim"] == 384
    expected, _ = class_embeddings(["CT", "MR"], LABELS, "onehot")
    assert method.net.embeddings.shape == (2, 4, 384) and not torch.equal(method.net.embeddings[..., :6], expected)
    meta = {"method": "mulmodseg", "network": method.network_spec, "modalities": {"CT": {}, "MR": {}}}
    rebuilt = build_inference_network(meta).eval()
    assert torch.all(rebuilt.embeddings == 0)
    rebuilt.load_state_dict(method.inference_network().state_dict(), strict=True)
    x = batch(5)["image"]
    with torch.no_grad():
        assert torch.equal(rebuilt(x, "MR"), method.net(x, "MR"))


def test_inference_never_needs_the_text_encoder(monkeypatch):
    from MultiModalSegLib import text_embeddings

    def unavailable(*args, **kwargs):
        raise AssertionError("the text encoder was called")

    monkeypatch.setattr(text_embeddings, "encode_texts", unavailable)
    monkeypatch.setattr(text_embeddings, "text_encoder_available", lambda: False)
    spec = {"name": "unet3d", "params": {"features": [4, 8, 16], "out_channels": 5, "modalities": ["CT", "MR"]}}
    spec["params"].update(norm="instance", embedding_source="text", embedding_dim=384)
    net = build_inference_network({"method": "mulmodseg", "network": spec, "modalities": {"CT": {}, "MR": {}}})
    assert net(torch.zeros(1, 1, 8, 16, 16), "CT").shape == (1, 5, 8, 16, 16)


def test_swinunetr_backbone():
    spec = {"name": "swinunetr", "params": {"feature_size": 12, "depths": [1, 1, 1, 1], "num_heads": [3, 3, 3, 3], "norm": "batch"}}
    method = make(network=spec, controller_hidden=16).eval()
    assert method.net.divisor == 32 and method.network_spec["name"] == "swinunetr"
    with torch.no_grad():
        out = method.net(torch.randn(1, 1, 32, 32, 32), "MR")
    assert out.shape == (1, 5, 32, 32, 32)
    with pytest.raises(InputError, match="multiples of 32"):
        method.net(torch.randn(1, 1, 16, 32, 32), "MR")


def test_bad_input():
    with pytest.raises(ConfigError, match="network name"):
        make(network={"name": "unet2d"})
    with pytest.raises(ConfigError, match="label names"):
        build_method("mulmodseg", TINY, ["CT", "MR"], 5, embedding="onehot", label_names=["liver"])
    with pytest.raises(ConfigError, match="unknown embedding source"):
        make(embedding="clip")
    with pytest.raises(InputError, match="PET"):
        make().net(batch(0)["image"], "PET")


@pytest.mark.slow
def test_alternating_training_steps_once_per_modality_and_resumes_exactly(phantom_dir, tmp_path):
    cfg = config_from_dict(
        tiny_config(phantom_dir, method="mulmodseg", method_params={"embedding": "onehot", "controller_hidden": 16})
    )
    trainer = Trainer(cfg, tmp_path / "straight", quiet=True)
    trainer.build()
    assert trainer.method.label_names == LABELS
    calls = []
    trainer.optimizer.register_step_post_hook(lambda opt, args, kwargs: calls.append(1))
    first = trainer.train_step()
    assert len(calls) == 2 and trainer.scheduler.last_epoch == 1
    assert set(first) == {"seg_CT", "seg_MR", "loss"} and first["loss"] == pytest.approx(first["seg_CT"] + first["seg_MR"])
    expected = [trainer.train_step()["loss"] for _ in range(2)]
    assert len(calls) == 6

    resumed = Trainer(cfg, tmp_path / "resumed", quiet=True)
    resumed.build()
    resumed.train_step()
    resumed.checkpoint()
    again = Trainer(cfg, tmp_path / "resumed", quiet=True)
    again.build()
    assert again.step == 1
    np.testing.assert_allclose([again.train_step()["loss"] for _ in range(2)], expected, rtol=1e-5, atol=1e-6)
