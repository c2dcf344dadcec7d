"""MulModSeg's vision branch: a U-shaped backbone, a text-conditioned controller and dynamic heads.

Li et al. 2024, Sec. 3, Fig. 1A. For class ``k`` and input modality ``m``::

    e_vis   = GAP(F_enc^Last)                         # global image feature
    theta_k = MLP(e_txt[m, k] (+) e_vis)              # the controller
    F_pre   = Conv-1(F_dec^Last)                      # 1x1x1 conv to 8 channels
    z_k     = ((F_pre * theta_k^1) * theta_k^2) * theta_k^3   # three 1x1x1 convs, 8-8-1
    P_k     = sigmoid(z_k)                            # class k against all others

Choices the paper leaves open: the controller is Linear-ReLU-Linear (``controller_hidden``
hidden units; 0 gives one Linear layer); the dynamic convolutions are separated by ReLU; Conv-1 is
a plain 1x1x1 convolution of the last decoder feature (the paper's formula names the encoder, its
text and figure the decoder). The class embeddings ``e_txt`` are a frozen buffer ``[M, K, D]``
(stored in the state dict, never trained).

Combining the one-vs-all scores into one label map: the network returns ``[B, K + 1, ...]`` with
a constant background logit 0 in channel 0 and ``z_k`` in channel ``k``. ``argmax`` then gives the
class with the highest ``P_k`` where some ``P_k > 0.5`` (``sigmoid(0) = 0.5``), and background
where every ``P_k <= 0.5``. A softmax over these channels (the Segmenter's probability output) is
monotone in each ``P_k`` but is not ``P_k`` itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.nets import SwinUNETR
from torch import nn

from ..errors import InputError
from .unet import UNet

BACKBONES = ("unet3d", "swinunetr")


class UNetBackbone(nn.Module):
    """This project's U-Net; its 1x1x1 output block (``head_channels`` wide) is Conv-1."""

    def __init__(
        self,
        head_channels: int,
        features: Sequence[int] = (16, 32, 64, 128),
        norm: str = "instance",
        modalities: Sequence[str] = ("CT", "MR"),
        dropout: float = 0.0,
        in_channels: int = 1,
    ) -> None:
        super().__init__()
        self.unet = UNet(3, in_channels, head_channels, features, norm, modalities, dropout)
        self.encoder_channels = int(features[-1])

    @property
    def divisor(self) -> int:
        return self.unet.divisor

    def forward(self, x: torch.Tensor, modality: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(F_enc^Last, Conv-1(F_dec^Last))``."""
        f = self.unet.features_dict(x, modality)
        return f["encoder"][-1], f["logits"]  # type: ignore[return-value]


class SwinUNETRBackbone(nn.Module):
    """MONAI's SwinUNETR; ``F_enc^Last`` is its bottleneck (``encoder10``), its output block is Conv-1."""

    def __init__(
        self,
        head_channels: int,
        feature_size: int = 24,
        depths: Sequence[int] = (2, 2, 2, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        norm: str = "instance",
        in_channels: int = 1,
    ) -> None:
        super().__init__()
        if norm not in ("instance", "batch"):
            raise InputError(f"the swinunetr backbone takes norm 'instance' or 'batch', not {norm!r}.")
        self.swin = SwinUNETR(
            in_channels=in_channels,
            out_channels=head_channels,
            feature_size=feature_size,
            depths=tuple(depths),
            num_heads=tuple(num_heads),
            norm_name=norm,
            spatial_dims=3,
        )
        self.encoder_channels = 16 * feature_size

    @property
    def divisor(self) -> int:
        return 32

    def forward(self, x: torch.Tensor, modality: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.swin
        if any(d % 32 for d in x.shape[2:]):
            raise InputError(f"the swinunetr backbone needs patch sizes that are multiples of 32, got {list(x.shape[2:])}.")
        hidden = s.swinViT(x, s.normalize)
        enc0 = s.encoder1(x)
        enc1 = s.encoder2(hidden[0])
        enc2 = s.encoder3(hidden[1])
        enc3 = s.encoder4(hidden[2])
        bottleneck = s.encoder10(hidden[4])
        dec = s.decoder5(bottleneck, hidden[3])
        dec = s.decoder4(dec, enc3)
        dec = s.decoder3(dec, enc2)
        dec = s.decoder2(dec, enc1)
        dec = s.decoder1(dec, enc0)
        return bottleneck, s.out(dec)


def dynamic_head_widths(head_channels: int) -> list[int]:
    """Output widths of the three dynamic convolutions: ``head_channels, head_channels, 1`` (8-8-1)."""
    return [head_channels, head_channels, 1]


def n_dynamic_params(head_channels: int) -> int:
    """Weights plus biases of the three dynamic 1x1x1 convolutions (153 for 8-8-1)."""
    n, c_in = 0, head_channels
    for c_out in dynamic_head_widths(head_channels):
        n += c_in * c_out + c_out
        c_in = c_out
    return n


def apply_dynamic_heads(features: torch.Tensor, theta: torch.Tensor, head_channels: int) -> torch.Tensor:
    """Per-sample, per-class 1x1x1 convolutions: ``features [B, C, ...]``, ``theta [B, K, P]`` -> ``[B, K, ...]``."""
    b, c = features.shape[:2]
    spatial = features.shape[2:]
    x = features.reshape(b, 1, c, -1).expand(b, theta.shape[1], c, -1)
    offset, c_in = 0, c
    widths = dynamic_head_widths(head_channels)
    for i, c_out in enumerate(widths):
        w = theta[..., offset : offset + c_in * c_out].reshape(b, -1, c_out, c_in)
        offset += c_in * c_out
        bias = theta[..., offset : offset + c_out].reshape(b, -1, c_out, 1)
        offset += c_out
        x = torch.einsum("bkoi,bkin->bkon", w, x) + bias
        if i < len(widths) - 1:
            x = torch.relu(x)
        c_in = c_out
    return x.reshape(b, theta.shape[1], *spatial)


class MulModSegNet(nn.Module):
    """Called as ``net(image, modality)``; ``prompt`` picks another modality's embeddings (Table 7)."""

    def __init__(
        self,
        backbone: str = "unet3d",
        out_channels: int = 5,
        modalities: Sequence[str] = ("CT", "MR"),
        embedding_dim: int = 7,
        embedding_source: str = "onehot",
        head_channels: int = 8,
        controller_hidden: int = 256,
        **backbone_params,
    ) -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise InputError(f"unknown MulModSeg backbone {backbone!r}; choose one of {list(BACKBONES)}.")
        self.modalities = list(modalities)
        self.n_foreground = out_channels - 1
        self.head_channels = head_channels
        self.embedding_source = embedding_source
        if backbone == "unet3d":
            self.backbone: nn.Module = UNetBackbone(head_channels, modalities=modalities, **backbone_params)
        else:
            self.backbone = SwinUNETRBackbone(head_channels, **backbone_params)
        self.register_buffer("embeddings", torch.zeros(len(self.modalities), self.n_foreground, embedding_dim))
        n_in, n_out = embedding_dim + self.backbone.encoder_channels, n_dynamic_params(head_channels)
        if controller_hidden:
            self.controller = nn.Sequential(nn.Linear(n_in, controller_hidden), nn.ReLU(), nn.Linear(controller_hidden, n_out))
        else:
            self.controller = nn.Sequential(nn.Linear(n_in, n_out))

    @property
    def divisor(self) -> int:
        return self.backbone.divisor

    def _modality_index(self, modality: str | None) -> int:
        if modality is None and len(self.modalities) == 1:
            return 0
        if modality not in self.modalities:
            raise InputError(f"this model has class embeddings for {self.modalities}, not for modality {modality!r}.")
        return self.modalities.index(modality)

    def class_logits(self, x: torch.Tensor, modality: str | None = None, prompt: str | None = None) -> torch.Tensor:
        """One-vs-all logits ``z_k`` of the foreground classes, ``[B, K, ...]``."""
        e_txt = self.embeddings[self._modality_index(prompt if prompt is not None else modality)]  # [K, D]
        enc_last, pre = self.backbone(x, modality)
        e_vis = enc_last.flatten(2).mean(-1)  # GAP, [B, C]
        b, k = x.shape[0], e_txt.shape[0]
        joint = torch.cat([e_txt.to(e_vis.dtype).expand(b, k, -1), e_vis[:, None].expand(b, k, -1)], dim=-1)
        theta = self.controller(joint)
        return apply_dynamic_heads(pre, theta, self.head_channels)

    def forward(self, x: torch.Tensor, modality: str | None = None, prompt: str | None = None) -> torch.Tensor:
        """``[B, K + 1, ...]``: background logit 0, then ``z_k`` (see the module docstring)."""
        z = self.class_logits(x, modality, prompt)
        return torch.cat([torch.zeros_like(z[:, :1]), z], dim=1)
