"""LSSC (Yang et al., "Toward unpaired multi-modal medical image segmentation via learning
structured semantic consistency"): one Transformer U-Net for every modality, trained with
modality-specific class embeddings, External Attention Modules and consistency losses that are all
dropped at inference."""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ..errors import ConfigError, InputError
from ..losses import as_target
from ..losses.structured_consistency import auxiliary_loss, image_consistency_loss, modality_consistency_loss
from ..networks import TransformerUNet, build_network
from .base import Batch, Method
from .registry import register_method


def semantic_correlations(maps: torch.Tensor, kernels: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Eq. 9-11: image-specific semantic correlations ``E`` ``[B, Z, Z]``.

    ``maps`` are the multi-head semantic-aware feature maps ``A`` ``[B, Z, N, L]`` (class ``j``'s
    group ``A^j`` is ``[N, L]``, ``L`` tokens); ``kernels`` are the semantic kernels ``K^i = Q^i W^i``
    ``[B, Z, N]``. Filtering (Eq. 9): ``S^{ij}_l = sum_n K^i_n A^j_{n,l}`` (a 1x1 convolution of
    ``A^j`` with kernel ``K^i``); re-weighting (Eq. 10): ``B^{ij} = A^j * softmax_j(S^i)`` at each
    token; aggregation (Eq. 11): ``E^i_j = sum_{n,l} B^{ij}_{n,l} / sum_l softmax_j(S^i)_l``.
    """
    similarity = torch.einsum("bin,bjnl->bijl", kernels, maps)
    gates = similarity.softmax(dim=2)
    numerator = torch.einsum("bijl,bjl->bij", gates, maps.sum(dim=2))
    return numerator / gates.sum(dim=-1).clamp_min(eps)


class ExternalAttention(nn.Module):
    """One External Attention Module (Sec. 3.3, Fig. 2b) at one decoder scale of width ``dim``.

    Multi-head cross attention of the class embeddings (queries) on the scale's tokens (keys,
    values), Eq. 4-6, with the residual updates of Eq. 7-8; the pre-softmax attention logits
    ``q k^T / sqrt(d)`` of every head are the semantic-aware feature maps ``A`` (Eq. 5 scales them
    by ``sqrt(d)``, used here as they enter the softmax). ``A`` gives the correlations ``E`` (Eq. 9-11)
    and, through a 1x1 convolution grouped by class (``N`` heads -> one logit per class: the paper's
    "reduce the dimension of multi-head"), the auxiliary prediction of Eq. 12. A linear map (the
    paper's 1x1 convolution) halves the width of the updated embeddings for the next scale.

    Choices: the semantic kernels ``K^i = Q^i W^i`` use the layer-normalised input embeddings, the
    same that make the cross-attention queries; the MLP of Eq. 8 has ``mlp_ratio * dim`` hidden units
    and a GELU.
    """

    def __init__(self, dim: int, n_classes: int, heads: int, spatial_dims: int, out_dim: int | None, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        if dim % heads:
            raise ConfigError(f"EAM heads ({heads}) must divide every EAM width (here {dim}); lower eam_heads.")
        self.dim, self.heads, self.n_classes = dim, heads, n_classes
        self.norm_q = nn.LayerNorm(dim)
        self.norm_f = nn.LayerNorm(dim)
        self.w_q = nn.Linear(dim, dim)
        self.w_k = nn.Linear(dim, dim)
        self.w_v = nn.Linear(dim, dim)
        self.w_o = nn.Linear(dim, dim)
        self.norm_mlp = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.filters = nn.Parameter(torch.randn(n_classes, dim, heads) / math.sqrt(dim))  # W^i, Eq. 9
        conv = nn.Conv3d if spatial_dims == 3 else nn.Conv2d
        self.aux_head = conv(n_classes * heads, n_classes, kernel_size=1, groups=n_classes)
        self.reduce = nn.Linear(dim, out_dim) if out_dim else None

    def forward(self, q: torch.Tensor, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``q`` ``[B, Z, dim]`` class embeddings, ``features`` ``[B, dim, *S]``; returns the next
        scale's image-specific embeddings, ``E`` ``[B, Z, Z]`` and auxiliary logits ``[B, Z, *S]``."""
        b, d, *spatial = features.shape
        z, n, dh = self.n_classes, self.heads, d // self.heads
        tokens = self.norm_f(features.flatten(2).transpose(1, 2))  # B, L, D
        q_norm = self.norm_q(q)
        qh = self.w_q(q_norm).reshape(b, z, n, dh).transpose(1, 2)  # B, N, Z, dh
        kh = self.w_k(tokens).reshape(b, -1, n, dh).transpose(1, 2)  # B, N, L, dh
        vh = self.w_v(tokens).reshape(b, -1, n, dh).transpose(1, 2)
        logits = qh @ kh.transpose(-1, -2) / math.sqrt(dh)  # B, N, Z, L
        attended = (logits.softmax(dim=-1) @ vh).transpose(1, 2).reshape(b, z, d)
        q_hat = self.w_o(attended) + q  # Eq. 6-7
        q_tilde = self.mlp(self.norm_mlp(q_hat)) + q_hat  # Eq. 8
        maps = logits.transpose(1, 2)  # A: B, Z, N, L
        kernels = torch.einsum("bzd,zdn->bzn", q_norm, self.filters)
        correlations = semantic_correlations(maps, kernels)
        aux = self.aux_head(maps.reshape(b, z * n, *spatial))
        q_next = self.reduce(q_tilde) if self.reduce is not None else q_tilde
        return q_next, correlations, aux


class EAMStack(nn.Module):
    """The EAMs of the three decoder scales; each scale's image-specific embeddings feed the next."""

    def __init__(self, dims: Sequence[int], n_classes: int, heads: int, spatial_dims: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        outs = [*dims[1:], None]
        self.scales = nn.ModuleList(
            ExternalAttention(d, n_classes, heads, spatial_dims, o, mlp_ratio) for d, o in zip(dims, outs, strict=True)
        )

    def forward(self, q: torch.Tensor, features: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        correlations, aux = [], []
        for eam, feat in zip(self.scales, features, strict=True):
            q, e, a = eam(q, feat)
            correlations.append(e)
            aux.append(a)
        return correlations, aux


class ChannelScaleGenerator(nn.Module):
    """Eq. 1: ``Omega = w_1 Q`` (a learnt mix of a modality's class embeddings), then for every block
    ``Phi_1 = diag(Omega W_2)``, ``Phi_2 = diag(Omega W_3)``; all blocks' ``W_2, W_3`` form one
    linear map to the flat scale vector the Transformer U-Net takes.

    Choice (the paper gives no initialisation): the map has a bias initialised to one and weights
    initialised to zero, ``Phi = Omega W + b``, so every block starts as the plain Transformer block
    and the modality calibration is learnt; ``w_1`` starts as the class average ``1/Z``.
    """

    def __init__(self, n_classes: int, embed_dim: int, size: int) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.full((n_classes,), 1.0 / n_classes))
        self.proj = nn.Linear(embed_dim, size)
        nn.init.zeros_(self.proj.weight)
        nn.init.ones_(self.proj.bias)

    def forward(self, class_embeddings: torch.Tensor) -> torch.Tensor:
        return self.proj(self.w1 @ class_embeddings)


@register_method
class LSSC(Method):
    """LSSC: a shared Transformer U-Net, modality-specific class embeddings ``Q`` (``Z x 4C``), EAMs at
    the three finest decoder scales and the losses of Eq. 15.

    Total loss (Eq. 15): ``sum_m L_seg^m + alpha * sum_m L_aux^m + beta * L_mcr + gamma * L_icr`` with
    ``alpha = beta = gamma = 0.5`` and ``tau = 4`` (Eq. 14); ``L_seg`` is Dice + cross-entropy.

    The network is ``transformer_unet3d`` (nnFormer-like, the default) or ``transformer_unet2d``
    (Swin-UNet-like on three adjacent slices; each slice is an image for the EAMs and losses). Its
    parameter ``channel_scaling`` (default true: the paper's "Joint V3") turns on the modality-aware
    channel multiplication of Eq. 1-3, driven during training by ``Q`` through
    :class:`ChannelScaleGenerator`; the exported network keeps only each modality's resulting scale
    vectors. The EAMs, ``Q``, the generator and the auxiliary heads are not exported.

    Choices the paper leaves open: the EAMs are modality-specific by default (Fig. 3b-c, "keeping
    EAMs as modality-specific"; ``eam_per_modality=False`` shares one set); ``Q`` starts from a
    normal distribution (std 0.02); with more than two modalities ``L_mcr`` and ``L_icr`` are
    averaged over modality pairs; ``L_icr`` is averaged over every cross-modal pair of images of
    the step (see :func:`image_consistency_loss`), ``L_mcr`` compares all modalities' ``Q`` at
    every step.

    Training recipe: the paper trains at lr 1e-4 (poly decay, many epochs) from a backbone
    pretrained on ImageNet, and says the performance suffers without it. No such weights are
    shipped or downloaded here, and from scratch the auxiliary loss leads at first: ``0.5 * L_aux``,
    summed over three scales as Eq. 12 has it, moves the backbone more than ``L_seg`` does at
    initialisation (``Testing/library/methods/test_lssc.py``). The recipe
    (``training/configs/abdomen_lssc.json``, and ``lssc`` in the selection bench) therefore trains
    at 3e-3 after a linear warm-up (at 1e-4 the loss barely moves within this library's budgets,
    ``training/reports/lssc-lr-sweep``) and starts from a pretrained backbone as the paper does, the
    training config's ``pretrain`` block (:mod:`..training.pretraining`) standing in for ImageNet:
    the Transformer alone first trains on the run's labelled data (``"segmentation"``, e.g.
    phantoms), or self-supervised on its images (``"masked_reconstruction"``). The method's own
    losses and weights stay the paper's.
    """

    name = "lssc"
    fixed_norm = "layer"
    paper = "Yang et al., LSSC (structured semantic consistency)"
    equations = "Eq. 1-15"
    loss_summary = (
        "Dice + CE per modality + 0.5 * L_aux (Eq. 12) + 0.5 * L_mcr (Eq. 13) + 0.5 * L_icr (Eq. 14, tau 4); "
        "recipe: lr 3e-3 after a warm-up, the Transformer pretrained first (the config's pretrain)"
    )
    inference_summary = "the Transformer U-Net alone (no EAMs, no class embeddings), with one channel-scale vector per modality"

    def __init__(
        self,
        network: Mapping,
        modalities: Sequence[str],
        n_classes: int,
        alpha: float = 0.5,
        beta: float = 0.5,
        gamma: float = 0.5,
        tau: float = 4.0,
        eam_heads: int = 4,
        eam_mlp_ratio: float = 4.0,
        eam_per_modality: bool = True,
    ) -> None:
        if network.get("name", "transformer_unet3d") not in ("transformer_unet3d", "transformer_unet2d"):
            raise ConfigError("lssc needs a Transformer U-Net: set network name to 'transformer_unet3d' or 'transformer_unet2d'.")
        super().__init__(network, modalities, n_classes)
        params = self.network_spec["params"]
        self.channel_scaling = bool(params["channel_scaling"])
        # the training network carries no fixed scales: they come from Q (Eq. 1) until export
        self.net = build_network(self.network_spec["name"], **{**params, "channel_scaling": False})
        core = getattr(self.net, "core", None)
        if not isinstance(core, TransformerUNet):
            raise ConfigError("lssc needs a Transformer U-Net: set network name to 'transformer_unet3d' or 'transformer_unet2d'.")
        if len(core.decoder_levels) < 3:
            raise ConfigError("lssc puts EAMs at three decoder scales: give the network four stages at least (depths and heads).")
        if tau <= 0:
            raise ConfigError(f"lssc's temperature tau must be positive, got {tau}.")
        self.alpha, self.beta, self.gamma, self.tau = alpha, beta, gamma, tau
        dims = [core.dims[level] for level in core.decoder_levels[-3:]]
        self.embed_dim = dims[0]
        self.class_embeddings = nn.ParameterDict(
            {m: nn.Parameter(nn.init.trunc_normal_(torch.empty(n_classes, dims[0]), std=0.02)) for m in self.modalities}
        )
        self.scale_generator = ChannelScaleGenerator(n_classes, dims[0], core.scale_size) if self.channel_scaling else None
        self.eam_per_modality = bool(eam_per_modality)
        if eam_per_modality:
            self.eams = nn.ModuleDict({m: EAMStack(dims, n_classes, eam_heads, core.spatial_dims, eam_mlp_ratio) for m in self.modalities})
        else:
            shared = EAMStack(dims, n_classes, eam_heads, core.spatial_dims, eam_mlp_ratio)
            self.eams = nn.ModuleDict({m: shared for m in self.modalities})

    @classmethod
    def complete_network_spec(cls, network: Mapping, modalities: Sequence[str], n_classes: int) -> dict:
        spec = super().complete_network_spec({"name": "transformer_unet3d", **dict(network)}, modalities, n_classes)
        spec["params"].setdefault("channel_scaling", True)
        return spec

    @classmethod
    def reference_network(cls, features: Sequence[int]) -> dict:
        """A Transformer U-Net whose stage widths are ``features`` (two blocks a stage, 16 channels a head)."""
        return {
            "name": "transformer_unet3d",
            "params": {"embed_dim": features[0], "depths": [2] * len(features), "heads": [max(1, f // 16) for f in features]},
        }

    def _add_modality_parameters(self, new: str, like: str) -> None:
        """``new`` gets a copy of ``like``'s class embeddings ``Q`` and (with modality-specific
        EAMs) of ``like``'s EAMs; its channel-scale vectors are the generator's output for its
        ``Q`` (Eq. 1), so they start equal to ``like``'s and the exported network gets one more."""
        self.class_embeddings[new] = nn.Parameter(self.class_embeddings[like].detach().clone())
        self.eams[new] = copy.deepcopy(self.eams[like]) if self.eam_per_modality else self.eams[like]
        super()._add_modality_parameters(new, like)

    def channel_scale_vector(self, modality: str) -> torch.Tensor | None:
        """The flat ``(Phi_1, Phi_2)`` vector of every block for ``modality`` (Eq. 1), or ``None``."""
        if self.scale_generator is None:
            return None
        return self.scale_generator(self._embeddings(modality))

    def _embeddings(self, modality: str) -> torch.Tensor:
        if modality not in self.class_embeddings:
            raise InputError(f"this lssc model knows modalities {self.modalities}, not {modality!r}.")
        return self.class_embeddings[modality]

    def logits(self, image: torch.Tensor, modality: str) -> torch.Tensor:
        return self.net(image, modality, self.channel_scale_vector(modality))

    def inference_network(self) -> nn.Module:
        """The backbone alone; with channel scaling, a copy whose fixed per-modality scale vectors are
        the generator's output for each modality (so it computes exactly what training computed)."""
        if not self.channel_scaling:
            return self.net
        net = self.build_inference_network(self.network_spec, self.modalities)
        net.to(next(self.net.parameters()).device)
        missing, unexpected = net.load_state_dict(self.net.state_dict(), strict=False)
        if unexpected or any("channel_scales." not in k for k in missing):
            raise RuntimeError(f"exported lssc network does not match its backbone: missing {missing}, unexpected {unexpected}")
        with torch.no_grad():
            for m in self.modalities:
                net.channel_scales.vectors[m].copy_(self.channel_scale_vector(m))
        return net.train(self.net.training)

    def training_step(self, batches: Mapping[str, Batch]) -> dict[str, torch.Tensor]:
        losses: dict[str, torch.Tensor] = {}
        correlations: dict[str, list[torch.Tensor]] = {}
        seg_total, aux_total = [], []
        for modality, batch in batches.items():
            q = self._embeddings(modality)
            images = self.net.image_batch(batch["image"])
            labels = self.net.label_batch(as_target(batch["label"]))
            feats = self.net.core.features_dict(images, modality, self.channel_scale_vector(modality))
            seg = self.seg_loss(feats["logits"], labels)
            e, aux_logits = self.eams[modality](q.expand(images.shape[0], -1, -1), feats["decoder"][-3:])
            aux = auxiliary_loss(aux_logits, labels)
            losses[f"seg_{modality}"], losses[f"aux_{modality}"] = seg, aux
            seg_total.append(seg)
            aux_total.append(aux)
            correlations[modality] = e
        pairs = list(itertools.combinations(self.modalities, 2))
        zero = seg_total[0].new_zeros(())
        mcr = torch.stack([modality_consistency_loss(self.class_embeddings[a], self.class_embeddings[b]) for a, b in pairs]).mean() if pairs else zero
        present = [(a, b) for a, b in pairs if a in correlations and b in correlations]
        icr = (
            torch.stack([image_consistency_loss(correlations[a], correlations[b], self.tau) for a, b in present]).mean()
            if present
            else zero
        )
        losses["mcr"], losses["icr"] = mcr, icr
        losses["loss"] = sum(seg_total) + self.alpha * sum(aux_total) + self.beta * mcr + self.gamma * icr
        return losses
