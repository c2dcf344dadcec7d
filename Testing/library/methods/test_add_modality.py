"""``Method.add_modality``: a trained CT + MR method gets a third modality (CBCT) with its own
parameters copied from an existing modality; old outputs do not change, the new one starts as
``like``, the exported bundle lists and rebuilds three modalities."""

from __future__ import annotations

import pytest
import torch

from MultiModalSegLib.bundle import load_bundle, save_bundle
from MultiModalSegLib.errors import InputError
from MultiModalSegLib.methods import METHODS, build_inference_network, build_method
from MultiModalSegLib.modalities import get_modality

torch.set_num_threads(1)

N_CLASSES = 3
LABEL_NAMES = ["liver", "spleen"]
UNET = {"name": "unet3d", "params": {"features": [4, 8, 16]}}
# A method whose network is not the tiny U-Net names its tiny network and parameters here.
CONFIGS: dict[str, tuple[dict, dict]] = {
    "lssc": (
        {"name": "transformer_unet3d", "params": {"embed_dim": 4, "depths": [1, 1, 1, 1], "heads": [1, 1, 2, 2], "window": 2, "patch": [1, 2, 2]}},
        {"eam_heads": 2},
    ),
    "mulmodseg": (UNET, {"embedding": "onehot", "label_names": LABEL_NAMES, "controller_hidden": 8}),
    "cmc": ({"name": "cmc", "params": {"features": [4, 8]}}, {}),
}
SHARES_EVERYTHING = {"joint", "joint_kd"}  # no modality-specific parameter at all: CT and MR give the same output


def trained(name: str, **params) -> torch.nn.Module:
    """A CT + MR method whose parameters (and BatchNorm statistics) differ from their initial values
    and between the modalities, as after training, in eval mode."""
    network, defaults = CONFIGS.get(name, (UNET, {}))
    torch.manual_seed(0)
    method = build_method(name, network, ["CT", "MR"], N_CLASSES, **{**defaults, **params})
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for key, value in method.state_dict().items():
            if not value.is_floating_point() or key.endswith("embeddings"):
                continue
            noise = torch.rand(value.shape, generator=g)
            value.mul_(0.5 + noise) if key.endswith("running_var") else value.add_(0.2 * (noise - 0.5))
    return method.eval()


def image(seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 1, 8, 16, 16, generator=torch.Generator().manual_seed(seed))


def outputs(method, modalities, x) -> dict[str, torch.Tensor]:
    net = method.inference_network().eval()
    with torch.no_grad():
        return {m: net(x, m) for m in modalities}


def batches(modalities, seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for i, m in enumerate(modalities):
        label = torch.randint(0, N_CLASSES, (2, 1, 8, 16, 16), generator=g).float()
        out[m] = {"image": torch.rand(2, 1, 8, 16, 16, generator=g) + 0.3 * label + i, "label": label}
    return out


@pytest.mark.parametrize("name", sorted(METHODS))
def test_old_outputs_unchanged_and_new_modality_starts_as_like(name):
    method = trained(name)
    x = image()
    before = outputs(method, ["CT", "MR"], x)
    if name not in SHARES_EVERYTHING:  # else "starts as CT" could not be told from "starts as MR"
        assert not torch.equal(before["CT"], before["MR"])
    old_state = {k: v.clone() for k, v in method.state_dict().items()}

    added = method.add_modality("cbct", like="CT")

    assert method.modalities == ["CT", "MR", "CBCT"]
    assert method.network_spec["params"]["modalities"] == ["CT", "MR", "CBCT"]
    after = outputs(method, ["CT", "MR", "CBCT"], x)
    for m in ("CT", "MR"):
        assert torch.equal(after[m], before[m]), f"{name}: {m} output changed"
    assert torch.equal(after["CBCT"], before["CT"]), f"{name}: CBCT does not start as CT"
    state = method.state_dict()
    for key, value in old_state.items():  # nothing existing was touched (a grown entry keeps its rows)
        assert torch.equal(state[key][: value.shape[0]] if state[key].shape != value.shape else state[key], value), key
    assert added == [k for k in state if k not in old_state or state[k].shape != old_state[k].shape]
    if name in SHARES_EVERYTHING:
        assert added == []
    else:
        assert added
    for key in added:  # each added entry is a copy of CT's counterpart
        if "CBCT" in key:
            assert torch.equal(state[key], state[key.replace("CBCT", "CT")]), key


@pytest.mark.parametrize("name", sorted(METHODS))
def test_exported_bundle_lists_and_rebuilds_three_modalities(name, tmp_path):
    method = trained(name)
    method.add_modality("CBCT", like="MR")
    x = image(1)
    expected = outputs(method, method.modalities, x)
    metadata = {
        "name": "tiny",
        "version": "0.1.0",
        "description": "test",
        "method": name,
        "network": method.network_spec,
        "modalities": {m: get_modality(m).to_dict() for m in method.modalities},
        "labels": [{"value": i + 1, "name": n, "color": [i, 0, 0]} for i, n in enumerate(LABEL_NAMES)],
        "spacing": [3.0, 3.0, 3.0],
        "patch_size": [8, 16, 16],
        "training": {},
        "licence": "CC0-1.0",
    }
    state = {k: v.detach() for k, v in method.inference_network().state_dict().items()}
    bundle = load_bundle(save_bundle(tmp_path / "bundle", metadata, state))
    assert bundle.modalities == ["CT", "MR", "CBCT"]
    net = build_inference_network(bundle.metadata)
    net.load_state_dict(bundle.state_dict, strict=True)
    net.eval()
    with torch.no_grad():
        for m in ("CT", "MR", "CBCT"):
            assert torch.equal(net(x, m), expected[m]), m


@pytest.mark.parametrize("name", sorted(METHODS))
def test_three_modalities_train_and_frozen_parameters_stay(name):
    method = trained(name).train()
    added = set(method.add_modality("CBCT", like="CT"))
    trainable = {n for n, _ in method.named_parameters()} & added
    # by default the parameters that existed before train ten times slower than the added ones
    assert method.lr_scales == {n: 0.1 for n, _ in method.named_parameters() if n not in added}
    groups = method.parameter_groups(1e-2)
    assert sorted(g["lr"] for g in groups) == pytest.approx([1e-3, 1e-2] if trainable else [1e-3])
    assert sum(len(g["params"]) for g in groups) == len(list(method.parameters()))
    method.lr_scales = {n: 0.0 for n, _ in method.named_parameters() if n not in added}  # freeze them
    groups = method.parameter_groups(1e-2)
    assert sorted(g["lr"] for g in groups) == ([0.0, 1e-2] if trainable else [0.0])
    optimizer = torch.optim.AdamW(groups, lr=1e-2)
    params = {n: p.detach().clone() for n, p in method.named_parameters()}
    data = batches(["CT", "MR", "CBCT"])
    if name in METHODS and getattr(METHODS[name], "uses_unlabelled", False):
        data["CBCT:unlabelled"] = {"image": data["CBCT"]["image"]}
    loss = method.training_step(data)["loss"]
    assert torch.isfinite(loss)
    loss.backward()
    optimizer.step()
    for n, p in method.named_parameters():
        assert torch.equal(p, params[n]) != (n in trainable and p.grad is not None and bool(p.grad.any())), n
    assert not trainable or any(not torch.equal(p, params[n]) for n, p in method.named_parameters() if n in trainable)


def test_bad_requests_are_input_errors():
    method = trained("ummkd")
    with pytest.raises(InputError, match="already"):
        method.add_modality("MR", like="CT")
    with pytest.raises(InputError, match="like='PET'"):
        method.add_modality("CBCT", like="PET")
    with pytest.raises(InputError, match="unknown modality 'XRAY'"):
        method.add_modality("XRAY", like="CT")
    assert method.modalities == ["CT", "MR"]


def test_mulmodseg_text_embeddings_get_the_new_prompt(monkeypatch):
    from MultiModalSegLib import text_embeddings

    def fake_encoder(texts):  # a deterministic stand-in for the sentence encoder
        return torch.stack([torch.tensor([len(t), t.count("cone-beam"), t.count("magnetic"), sum(map(ord, t)) % 97], dtype=torch.float32) for t in texts])

    monkeypatch.setattr(text_embeddings, "text_encoder_available", lambda: True)
    monkeypatch.setattr(text_embeddings, "encode_texts", fake_encoder)
    method = trained("mulmodseg", embedding="text")
    x = image(2)
    before = outputs(method, ["CT", "MR"], x)
    assert method.add_modality("CBCT", like="CT") == ["net.embeddings"]
    emb = method.net.embeddings
    prompts = [text_embeddings.prompt("CBCT", n) for n in LABEL_NAMES]
    assert prompts[0] == "A cone-beam computerized tomography imaging of a liver"
    assert torch.equal(emb[2], fake_encoder(prompts))
    after = outputs(method, ["CT", "MR", "CBCT"], x)
    assert torch.equal(after["CT"], before["CT"]) and torch.equal(after["MR"], before["MR"])
    assert not torch.equal(after["CBCT"], before["CT"])  # conditioned on its own prompt


def test_without_added_modality_one_group_holds_every_parameter_at_the_lr():
    method = trained("ummkd")
    (group,) = method.parameter_groups(2e-3)
    assert group["lr"] == 2e-3 and [id(p) for p in group["params"]] == [id(p) for p in method.parameters()]
