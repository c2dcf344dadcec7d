"""CSA: class-specific affinity guided learning (paper 004: shared FCN, modality-specific BatchNorm,
consistency of class-specific affinity matrices between modalities)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ..errors import ConfigError
from ..losses import as_target, dice_ce_loss
from ..losses.class_affinity import MIN_REGION, REGION_NORMS, csa_loss
from ..networks import SliceWise, UNet
from .base import Batch, Method
from .registry import register_method

LAYER_GROUPS = ("encoder", "decoder")


def _unet_inside(net: nn.Module) -> UNet | None:
    inner = net.net if isinstance(net, SliceWise) else net
    return inner if isinstance(inner, UNet) else None


def _parse_layer(name: str, unet: UNet) -> tuple[str, int]:
    group, _, index = str(name).partition(".")
    n = {"encoder": len(unet.features), "decoder": len(unet.features) - 1}.get(group)
    if n is None or not index.lstrip("-").isdigit() or not -n <= int(index) < n:
        counts = f"this network has encoder.0-{len(unet.features) - 1} and decoder.0-{len(unet.features) - 2}"
        raise ConfigError(f"csa layer {name!r} is not a layer of the network ({counts}); name two, e.g. ['decoder.0', 'decoder.1'].")
    return group, int(index) % n


@register_method
class CSA(Method):
    """Shared convolutions with one BatchNorm set per modality (Sec. 2.2) plus the class-specific
    affinity loss between the modalities (Sec. 2.3-2.4, :mod:`..losses.class_affinity`).

    Total loss, Eq. 5: ``L = alpha (L_dice^1 + L_dice^2) + beta (L_ce^1 + L_ce^2) + lambda L_CSA``
    with ``alpha, beta, lambda = 1, 1, 0.5``; Dice over the foreground classes, CE over all.

    ``layers`` names the two layers ``l`` and ``k`` whose feature maps give the affinity
    matrices, as ``"encoder.i"`` / ``"decoder.i"`` of the U-Net's ``features_dict`` (decoder 0 is
    the coarsest up-sampling block; negative indices count from the end). The paper takes two
    intermediate layers close to each other and avoids the last ones ("too closely related to the
    ground truth"); the default is the first two decoder blocks (adjacent, the deepest decoder
    layers, at 1/4 and 1/2 resolution in a four-level U-Net). The affinity is between the
    channels of the two layers: ``A^c`` is ``M x N`` (channels of ``l`` by channels of ``k``).
    ``region_norm`` is Eq. 3's ``S^c``: ``"none"`` (default) keeps the plain cosine, which is the
    size invariance the paper asks of ``S^c`` (a cosine does not depend on the region's size, while
    dividing it by ``S^c`` makes it grow without bound for a class that covers a fraction of a
    coarse voxel); ``"count"`` / ``"fraction"`` give the literal reading. ``min_region`` (1 voxel
    of the comparison grid, summed over the batch) leaves out a class too small to have an
    affinity structure (see :mod:`..losses.class_affinity` for the reasoning and every other
    choice made there). With more than two modalities ``L_CSA`` is averaged over all pairs.
    Works with ``unet3d`` and the slice-wise ``unet2d`` / ``unet2.5d`` (whose feature maps keep
    every slice, so masks are resized in-plane only). Nothing of the loss exists at inference: the
    exported network is the U-Net with its per-modality BatchNorm sets.
    """

    name = "csa"
    default_norm = "modality_batch"
    paper = "affinity-guided FCN with class-specific affinity (CSA)"
    equations = "Eq. 1 (modality BN), 2-3 (class-specific affinity), 4 (L_CSA), 5 (total)"
    loss_summary = (
        "alpha (Dice_1 + Dice_2) + beta (CE_1 + CE_2) + lambda L_CSA; alpha 1, beta 1, lambda 0.5; "
        "Eq. 3's affinity a plain (size-invariant) cosine, without 1/S^c"
    )
    inference_summary = "the shared U-Net with the input modality's BatchNorm set"

    def __init__(
        self,
        network: Mapping,
        modalities: Sequence[str],
        n_classes: int,
        alpha: float = 1.0,
        beta: float = 1.0,
        lam: float = 0.5,
        layers: Sequence[str] = ("decoder.0", "decoder.1"),
        region_norm: str = "none",
        min_region: float = MIN_REGION,
    ) -> None:
        super().__init__(network, modalities, n_classes)
        if not self.network_spec["params"]["norm"].startswith("modality_"):
            raise ConfigError("csa needs modality-specific normalisation: norm 'modality_batch' (the paper's) or 'modality_instance'.")
        unet = _unet_inside(self.net)
        if unet is None:
            raise ConfigError(
                f"csa needs a U-Net whose feature maps it can read: network 'unet3d', 'unet2d' or 'unet2.5d', not {self.network_spec['name']!r}."
            )
        if isinstance(layers, str) or len(layers) != 2:
            raise ConfigError(f"csa layers must name two layers, e.g. ['decoder.0', 'decoder.1'], not {layers!r}.")
        self.layers = [_parse_layer(name, unet) for name in layers]
        if self.layers[0] == self.layers[1]:
            raise ConfigError(f"csa layers {list(layers)} name the same layer twice; name two different ones.")
        if region_norm not in REGION_NORMS:
            raise ConfigError(f"csa region_norm {region_norm!r} is unknown; choose one of {list(REGION_NORMS)}.")
        self.alpha, self.beta, self.lam = alpha, beta, lam
        self.region_norm = region_norm
        if not float(min_region) >= 0:
            raise ConfigError(f"csa min_region must be 0 or more voxels of the comparison grid, got {min_region!r}.")
        self.min_region = float(min_region)
        self.seg_loss = dice_ce_loss(alpha, beta)  # alpha * Dice + beta * CE, per modality

    def training_step(self, batches: Mapping[str, Batch]) -> dict[str, torch.Tensor]:
        losses: dict[str, torch.Tensor] = {}
        pairs_of_maps: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for modality, batch in batches.items():
            feats = self.net.features_dict(batch["image"], modality)
            losses[f"seg_{modality}"] = self.seg_loss(feats["logits"], as_target(batch["label"]))
            pairs_of_maps[modality] = tuple(feats[group][index] for group, index in self.layers)  # type: ignore[assignment]
        pairs = list(itertools.combinations(batches, 2))
        if pairs:
            csa = torch.stack(
                [
                    csa_loss(
                        pairs_of_maps[a], batches[a]["label"], pairs_of_maps[b], batches[b]["label"], self.n_classes,
                        self.region_norm, self.min_region,
                    )
                    for a, b in pairs
                ]
            ).mean()
        else:
            csa = sum(losses.values()) * 0.0
        total = sum(losses.values()) + self.lam * csa
        losses["csa"] = csa
        losses["loss"] = total
        return losses
