"""MulModSeg (Li et al., "MulModSeg: Enhancing unpaired multi-modal medical image segmentation with
modality-conditioned text embedding and alternating training", 2024)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from torch import nn

from ..errors import ConfigError
from ..losses import as_target
from ..networks.mulmodseg import BACKBONES
from ..text_embeddings import class_embeddings
from .base import Batch, Method
from .registry import register_method

log = logging.getLogger(__name__)


def one_vs_all_targets(label: torch.Tensor, n_foreground: int) -> torch.Tensor:
    """``[B, 1, ...]`` label map -> ``[B, K, ...]`` binary masks of classes ``1..K``."""
    target = as_target(label)
    classes = torch.arange(1, n_foreground + 1, device=target.device).view(1, -1, *([1] * (target.dim() - 2)))
    return (target == classes).to(torch.float32)


class OneVsAllLoss(nn.Module):
    """Sigmoid one-vs-all loss on ``z_k``: mean binary cross-entropy plus soft Dice.

    ``BCE`` is averaged over voxels, classes and the batch; Dice is MONAI's ``DiceLoss`` with
    ``sigmoid=True``, ``batch=True`` (sums over the batch and the voxels, per class, smoothing
    1e-5), averaged over the foreground classes, as this library's softmax ``L_seg`` does.
    """

    def __init__(self, dice_weight: float = 1.0, bce_weight: float = 1.0) -> None:
        super().__init__()
        self.dice = DiceLoss(sigmoid=True, batch=True)
        self.dice_weight = dice_weight
        self.bce_weight = bce_weight

    def forward(self, class_logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        target = one_vs_all_targets(label, class_logits.shape[1])
        z = class_logits.float()
        return self.bce_weight * F.binary_cross_entropy_with_logits(z, target) + self.dice_weight * self.dice(z, target)


@register_method
class MulModSeg(Method):
    """Text-conditioned dynamic heads on a UNet or SwinUNETR backbone, trained by alternation.

    The network (see :mod:`..networks.mulmodseg`) is conditioned on frozen class embeddings of the
    prompt "A {modality} imaging of a {organ}" (``embedding="text"``, the packaged MiniLM sentence
    encoder instead of the paper's CLIP ViT-B/32), or on one-hot modality+class codes
    (``"onehot"``, the paper's Table 1 variant); ``"auto"`` takes text when the encoder package is
    installed. The source used and the embedding size are recorded in the network spec and the
    embeddings travel in the exported state dict. Loss per modality: sigmoid one-vs-all BCE + Dice
    over the foreground classes. Training alternates (Algorithm 1): one optimiser step on the CT
    batch, then one on the MR batch (the engine does this for methods with ``alternating = True``,
    in the order of the configuration's ``modalities``). Normalisation is shared by the modalities
    and defaults to instance norm (the paper's MONAI backbones' default).
    """

    name = "mulmodseg"
    default_norm = "instance"
    alternating = True
    paper = "Li et al., 2024 (MulModSeg)"
    equations = "Sec. 3: theta_k = MLP(e_txt (+) GAP(F_enc)), P_k = sigmoid of three dynamic 1x1x1 convs; Algorithm 1 (ALT)"
    loss_summary = "per modality sigmoid one-vs-all BCE + Dice (weights 1, 1), one optimiser step per modality"
    inference_summary = "backbone + controller + dynamic heads; frozen class embeddings stored as a buffer, no text encoder"

    def __init__(
        self,
        network: Mapping,
        modalities: Sequence[str],
        n_classes: int,
        embedding: str = "auto",
        label_names: Sequence[str] | None = None,
        controller_hidden: int = 256,
        head_channels: int = 8,
    ) -> None:
        if network.get("name", "unet3d") not in BACKBONES:
            raise ConfigError(f"mulmodseg needs network name one of {list(BACKBONES)}, not {network.get('name')!r}.")
        if label_names is None:
            label_names = [f"class {k}" for k in range(1, n_classes)]
        if len(label_names) != n_classes - 1:
            raise ConfigError(f"mulmodseg got {len(label_names)} label names for {n_classes - 1} foreground classes.")
        self_label_names = list(label_names)
        emb, source = class_embeddings(modalities, self_label_names, embedding)
        log.info("mulmodseg: class embeddings from %s (dimension %d)", source, emb.shape[-1])
        params = dict(network.get("params", {}))
        params.update(
            embedding_source=source,
            embedding_dim=int(emb.shape[-1]),
            controller_hidden=int(controller_hidden),
            head_channels=int(head_channels),
        )
        super().__init__({"name": network.get("name", "unet3d"), "params": params}, modalities, n_classes)
        self.label_names = self_label_names
        self.net.embeddings.copy_(emb)
        self.seg_loss = OneVsAllLoss()

    def _add_modality_parameters(self, new: str, like: str) -> None:
        """The frozen class-embedding buffer ``[M, K, D]`` grows by one row for ``new``.

        Text embeddings: the row is the frozen encoder's embedding of ``new``'s own prompts "A
        {new} imaging of a {organ}" (the paper's conditioning), so ``new`` is told apart from
        ``like`` from the start and its first outputs are near ``like``'s, not equal to them.
        One-hot codes: a new one-hot dimension would change the controller's input width, a
        shared layer every old modality runs through; instead the codes stay ``M + K`` wide and
        ``new``'s row is a copy of ``like``'s code, so ``new`` starts (and, being frozen, stays
        conditioned) exactly as ``like``; fine-tuning adapts the shared weights. No trainable
        parameter is added (the backbone's per-modality normalisation sets, if any, are copied).
        """
        super()._add_modality_parameters(new, like)
        net = self.net
        if self.network_spec["params"]["embedding_source"] == "text":
            row = class_embeddings([new], self.label_names, "text")[0][0]
        else:
            row = net.embeddings[net.modalities.index(like)].clone()
        net.embeddings = torch.cat([net.embeddings, row.to(net.embeddings)[None]])
        net.modalities.append(new)

    def training_step(self, batches: Mapping[str, Batch]) -> dict[str, torch.Tensor]:
        losses = {}
        for modality, batch in batches.items():
            z = self.net.class_logits(batch["image"], modality)
            losses[f"seg_{modality}"] = self.seg_loss(z, batch["label"])
        losses["loss"] = sum(losses.values())
        return losses
