"""BatchNorm statistics in training and at inference, for every baseline of the UMMKD paper.

The paper's Joint feeds half CT and half MR in each batch, so a shared BatchNorm normalises with
the statistics of the CT+MR mixture in training and keeps running statistics of that same mixture
for inference. With every BatchNorm's momentum at 1 the running statistics are exactly the last
training batch's (once their unbiased variance is turned back into the biased one training
normalised with), so a network whose training and inference agree gives, in eval mode, the logits
the training step computed. Forwarding each modality alone (``batch_forward="per_modality"``) fails that.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from MultiModalSegLib.losses import as_target
from MultiModalSegLib.methods import build_method
from MultiModalSegLib.networks.partly_shared import PerModality

torch.set_num_threads(1)

N_CLASSES = 3
MODALITIES = ["CT", "MR"]
BASELINES = ["individual", "joint", "joint_kd", "y_shaped", "x_shaped"]
B = 2


def make(name: str, norm: str = "batch", **params) -> nn.Module:
    torch.manual_seed(0)
    network = {"name": "unet3d", "params": {"features": [4, 8, 16], "norm": norm}}
    return build_method(name, network, MODALITIES, N_CLASSES, **params)


def batches(seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """CT and MR with very different intensities (as real scans after their own profiles)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for i, m in enumerate(MODALITIES):
        label = torch.randint(0, N_CLASSES, (B, 1, 8, 16, 16), generator=g).float()
        image = (torch.rand(B, 1, 8, 16, 16, generator=g) + 0.5 * label) * (1 + 3 * i) - 2 * i
        out[m] = {"image": image, "label": label}
    return out


def batch_norms(module: nn.Module) -> list[nn.BatchNorm3d]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def train_then_infer(method: nn.Module, data: dict) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(each modality's logits in one training step, its logits in eval mode afterwards)."""
    counts: dict[nn.Module, int] = {}  # values per channel in each BatchNorm's last training batch

    def count(module, args) -> None:
        counts[module] = args[0].numel() // args[0].shape[1]

    hooks = []
    for bn in batch_norms(method):
        bn.momentum = 1.0  # running statistics := this step's batch statistics
        hooks.append(bn.register_forward_pre_hook(count))
    trained: dict[str, torch.Tensor] = {}

    def keep(module, args, out) -> None:  # the network's calls: one per modality, or one mixed batch
        if isinstance(args[1], str):
            trained[args[1]] = out.detach()
        else:
            trained.update(zip([m for m, _ in args[1]], out.detach().split([n for _, n in args[1]]), strict=True))

    hooks.append(method.net.register_forward_hook(keep))
    losses = method.train().training_step(data)
    for hook in hooks:
        hook.remove()
    with torch.no_grad():
        for bn, n in counts.items():
            bn.running_var.mul_((n - 1) / n)  # the running variance is unbiased, training's is not
    method.eval()
    with torch.no_grad():
        inferred = {m: method.inference_network()(d["image"], m) for m, d in data.items()}
        for m, d in data.items():  # the hook saw the logits the losses were computed from
            torch.testing.assert_close(method.seg_loss(trained[m], as_target(d["label"])), losses[f"seg_{m}"].detach())
    return trained, inferred


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("name", BASELINES)
def test_inference_normalises_with_the_statistics_training_used(name):
    trained, inferred = train_then_infer(make(name), batches())
    for m in MODALITIES:
        assert relative_difference(inferred[m], trained[m]) < 1e-4, m


@pytest.mark.parametrize("name", ["joint", "joint_kd", "y_shaped", "x_shaped"])
def test_forwarding_each_modality_alone_trains_shared_batchnorm_on_other_statistics(name):
    """The per-modality option: CT is normalised by CT statistics in training, by statistics that
    are not CT's (here the last batch's, MR) at inference."""
    trained, inferred = train_then_infer(make(name, batch_forward="per_modality"), batches())
    assert relative_difference(inferred["CT"], trained["CT"]) > 1e-2
    assert relative_difference(inferred["MR"], trained["MR"]) < 1e-4  # the last one forwarded


def record_batch_sizes(method: nn.Module) -> dict[str, list[int]]:
    """Name -> the batch sizes each BatchNorm layer saw during one training step."""
    seen: dict[str, list[int]] = {}
    handles = [bn.register_forward_hook(lambda mod, args, out, key=key: seen.setdefault(key, []).append(args[0].shape[0]))
               for key, bn in method.named_modules() if isinstance(bn, nn.modules.batchnorm._BatchNorm)]
    method.train().training_step(batches())
    for h in handles:
        h.remove()
    return seen


@pytest.mark.parametrize("name", BASELINES)
def test_shared_batchnorm_sees_the_mixed_batch_and_modality_layers_their_own_items(name):
    method = make(name)
    seen = record_batch_sizes(method)
    own = {f"{prefix}.{k}" for prefix, mod in method.named_modules() if isinstance(mod, PerModality) for k in ("blocks",)}
    for key, sizes in seen.items():
        per_modality = name == "individual" or any(key.startswith(prefix) for prefix in own)
        assert sizes == ([B] if per_modality else [2 * B]), (key, sizes)
    assert len(seen) == len(batch_norms(method))  # every BatchNorm ran once in the step


def test_mixed_batches_change_nothing_without_batch_statistics():
    """With instance normalisation (no batch statistics), or one BatchNorm set per modality, the
    mixed forward computes exactly what forwarding each modality alone computes."""
    data = batches(1)
    for name, norm in (("joint", "instance"), ("x_shaped", "instance"), ("y_shaped", "instance"), ("joint", "modality_batch")):
        mixed = make(name, norm).train().training_step(data)
        alone = make(name, norm, batch_forward="per_modality").train().training_step(data)
        for key in ("seg_CT", "seg_MR", "loss"):
            torch.testing.assert_close(mixed[key], alone[key], rtol=1e-5, atol=1e-6)


def test_mixed_batches_need_one_patch_shape_and_a_unet():
    from MultiModalSegLib.errors import ConfigError, InputError

    data = batches()
    data["MR"] = {k: v[..., :8] for k, v in data["MR"].items()}
    with pytest.raises(InputError, match="one shape"):
        make("joint").train().training_step(data)
    make("joint", batch_forward="per_modality").train().training_step(data)
    with pytest.raises(ConfigError, match="batch_forward"):
        make("joint", batch_forward="halves")
    transformer = {"name": "transformer_unet3d", "params": {"embed_dim": 4, "depths": [1, 1], "heads": [1, 1], "window": 2, "patch": [1, 2, 2], "norm": "layer"}}
    with pytest.raises(ConfigError, match="per_modality"):
        build_method("joint", transformer, MODALITIES, N_CLASSES)
    assert build_method("joint", transformer, MODALITIES, N_CLASSES, batch_forward="per_modality").batch_forward == "per_modality"
