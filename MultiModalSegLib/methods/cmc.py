"""CMC (Zhou et al., "Robust semi-supervised multimodal medical image segmentation via cross
modality collaboration", MICCAI 2024)."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from ..errors import ConfigError
from ..losses import as_target
from ..losses.cmc import (
    CAC_PAIRINGS,
    REDUCTIONS,
    csc_loss,
    paired_cac_loss,
    prototype_cac_loss,
    ramp_down,
    ramp_up,
)
from .base import Batch, Method
from .registry import register_method

UNLABELLED = ":unlabelled"  # batches of unlabelled cases are keyed "<modality>:unlabelled"


@register_method
class CMC(Method):
    """Semi-supervised cross-modality collaboration on labelled and unlabelled unpaired scans.

    Network (:class:`..networks.cmc.CMCNetwork`): modality-specific encoders ``E^m`` (their
    deepest maps are ``F_ds^m``), modality-independent awareness modules, one shared fusion layer
    and modality-specific decoders ``D^m``. Losses per step:

    - ``L_Sup`` (Eq. 2): Dice + cross-entropy on every modality's labelled batch (the equation
      prints CE for one modality and Dice for the other; both get both here). Each labelled batch
      is decoded twice and the two losses are mixed ``(1 - w) * cross + w * single`` with
      ``w = single_input_weight`` (0.5): *cross* fuses ``F_mia^m`` with the other modality's
      ``F_mia`` of the same step (the paper's fusion; the scans are unpaired, so the partner is
      another patient's patch), *single* fuses ``F_mia^m`` with itself, the path the exported
      network runs on one volume of one modality.
    - ``L_CSC`` (Eq. 1) between ``F_ds`` of the modalities' labelled batches.
    - ``L_CAC`` (Eq. 3) on the modalities' unlabelled batches (cross-fusion path); absent when a
      modality has no unlabelled case. ``cac_pairing="prototypes"`` (default, for unpaired scans):
      per class, the mean of ``F_mia`` weighted by the predicted probability of the class, class
      ``k`` of one modality the positive of class ``k`` of the other
      (:func:`..losses.cmc.prototype_cac_loss`); ``"paired"``: the paper's pairing of sample ``j``
      with sample ``j`` by the Dice similarity of their predictions, which means something only
      for paired data (the same patients, registered), not for unpaired scans, where those are two
      random patches of different patients.

    ``reduction`` (``"mean"``, default, or ``"sum"``) is how Eq. 1 and Eq. 3 combine their
    channels / samples / classes: averaged, ``alpha`` and ``beta`` weigh a per-item loss whatever
    the network's width or the batch size, as the paper's ramp weights are meant (see
    :mod:`..losses.cmc`); ``"sum"`` is the equations as printed.

    Total: ``L_Sup + alpha * L_CSC + beta * L_CAC`` with the ramp-up ``alpha = 0.1 exp(-5 (1 -
    t/t_max))`` and ramp-down ``beta = 0.1 exp(-5 t/t_max)``; ``t`` counts optimiser steps (the
    paper counts epochs), given by the engine through :meth:`set_progress`. With more than two
    modalities, each modality's cross-fusion partner is the next one in the list and the pairwise
    losses are averaged over all pairs (a choice; the paper has two). The semi-supervised terms
    are ordinary differentiable terms of the loss (they train the encoders, MIA modules, fusion
    and decoders). ``pretrained_encoder``: an optional path to a state dict of one encoder (keys
    of an ``encoders.<modality>`` module list), loaded into every modality's encoder; off by
    default and none is shipped.
    """

    name = "cmc"
    default_norm = "instance"
    paper = "Zhou et al., MICCAI 2024 (CMC)"
    equations = "Eq. 1 (L_CSC), 2 (L_Sup), 3 (L_CAC), ramp-up / ramp-down weights"
    loss_summary = (
        "L_Sup (Dice + CE) + alpha L_CSC + beta L_CAC; alpha = 0.1 exp(-5 (1 - t)), beta = 0.1 exp(-5 t); "
        "L_CSC, L_CAC averaged over channels / classes; L_CAC between class prototypes (unpaired scans)"
    )
    inference_summary = "the input modality's encoder, awareness module, fusion fed with its own features twice, and decoder"
    uses_unlabelled = True  # the engine adds "<modality>:unlabelled" batches (images only)

    def __init__(
        self,
        network: Mapping,
        modalities: Sequence[str],
        n_classes: int,
        csc_weight: float = 0.1,
        cac_weight: float = 0.1,
        csc_temperature: float = 1.0,
        cac_temperature: float = 1.0,
        single_input_weight: float = 0.5,
        pretrained_encoder: str | None = None,
        cac_pairing: str = "prototypes",
        reduction: str = "mean",
    ) -> None:
        super().__init__(network, modalities, n_classes)
        if not 0.0 <= single_input_weight <= 1.0:
            raise ConfigError(f"cmc: single_input_weight must lie in [0, 1], got {single_input_weight}.")
        if cac_pairing not in CAC_PAIRINGS:
            raise ConfigError(f"cmc: cac_pairing {cac_pairing!r} is unknown; choose one of {list(CAC_PAIRINGS)} ('paired' for paired data only).")
        if reduction not in REDUCTIONS:
            raise ConfigError(f"cmc: reduction {reduction!r} is unknown; choose one of {list(REDUCTIONS)}.")
        self.cac_pairing, self.reduction = cac_pairing, reduction
        self.csc_weight = csc_weight
        self.cac_weight = cac_weight
        self.csc_temperature = csc_temperature
        self.cac_temperature = cac_temperature
        self.single_input_weight = single_input_weight
        self.step, self.total_steps = 0, 1
        if pretrained_encoder:
            self._load_encoder(Path(pretrained_encoder))

    @classmethod
    def complete_network_spec(cls, network: Mapping, modalities: Sequence[str], n_classes: int) -> dict:
        name = network.get("name", "cmc")
        if name not in ("cmc", "unet3d"):
            raise ConfigError(f"cmc builds its own 3D network; set network name to 'cmc' (got {name!r}).")
        spec = super().complete_network_spec(network, modalities, n_classes)
        spec["name"] = "cmc"
        return spec

    def _add_modality_parameters(self, new: str, like: str) -> None:
        """``new`` gets copies of ``like``'s encoder, awareness module, decoder and output head; the
        fusion layer stays shared. As a cross-fusion partner ``new`` takes its place at the end of
        the modality list (see the class docstring)."""
        net = self.net
        for group in (net.encoders, net.aware, net.decoders, net.heads):
            group[new] = copy.deepcopy(group[like])
        net.modalities.append(new)
        super()._add_modality_parameters(new, like)

    def _load_encoder(self, path: Path) -> None:
        if not path.is_file():
            raise ConfigError(f"cmc: pretrained_encoder {path} does not exist; give a state dict file or leave it out.")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # a pickle with code, a damaged or foreign file: never executed, refused
            raise ConfigError(
                f"cmc: pretrained_encoder {path} is not a plain state dict of tensors ({err.__class__.__name__}); "
                "save one with torch.save(encoder.state_dict(), path)."
            ) from err
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ConfigError(f"cmc: pretrained_encoder {path} is not a state dict of tensors; save encoder.state_dict().")
        for enc in self.net.encoders.values():
            try:
                enc.load_state_dict(state)
            except RuntimeError as err:
                raise ConfigError(f"cmc: pretrained_encoder {path} does not fit the encoder ({err}).") from err

    def set_progress(self, step: int, total_steps: int) -> None:
        self.step, self.total_steps = int(step), max(int(total_steps), 1)

    @property
    def alpha(self) -> float:
        return ramp_up(self.step, self.total_steps, self.csc_weight)

    @property
    def beta(self) -> float:
        return ramp_down(self.step, self.total_steps, self.cac_weight)

    def _partners(self, present: Sequence[str]) -> dict[str, str]:
        order = [m for m in self.modalities if m in present]
        return {m: order[(i + 1) % len(order)] for i, m in enumerate(order)}

    def _encode_all(self, images: Mapping[str, torch.Tensor]) -> tuple[dict, dict]:
        skips = {m: self.net.encode(x, m) for m, x in images.items()}
        aware = {m: self.net.awareness(s[-1], m) for m, s in skips.items()}
        return skips, aware

    def cross_logits(self, images: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Predictions of each modality's batch fused with its partner modality's batch."""
        return self._cross(images)[0]

    def _cross(self, images: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(cross-fusion predictions, ``F_mia``) of each modality's batch."""
        skips, aware = self._encode_all(images)
        partner = self._partners(list(images))
        return {m: self.net.decode(self.net.fuse(aware[m], aware[partner[m]]), skips[m], m) for m in images}, aware

    def supervised(self, batches: Mapping[str, Batch]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """``L_Sup`` per modality (cross and single-input paths mixed) and the ``F_ds`` maps."""
        skips, aware = self._encode_all({m: b["image"] for m, b in batches.items()})
        partner = self._partners(list(batches))
        w = self.single_input_weight
        losses = {}
        for m, b in batches.items():
            target = as_target(b["label"])
            loss = torch.zeros((), device=b["image"].device)
            if w < 1:
                loss = loss + (1 - w) * self.seg_loss(self.net.decode(self.net.fuse(aware[m], aware[partner[m]]), skips[m], m), target)
            if w > 0:
                loss = loss + w * self.seg_loss(self.net.decode(self.net.fuse(aware[m], aware[m]), skips[m], m), target)
            losses[f"seg_{m}"] = loss
        return losses, {m: s[-1] for m, s in skips.items()}

    def csc(self, f_ds: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``L_CSC`` (Eq. 1) averaged over modality pairs."""
        pairs = list(itertools.combinations(f_ds, 2))
        if not pairs:
            return torch.zeros((), device=next(iter(f_ds.values())).device)
        return torch.stack([csc_loss(f_ds[a], f_ds[b], self.csc_temperature, self.reduction) for a, b in pairs]).mean()

    def cac(self, unlabelled: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
        """``L_CAC`` (Eq. 3) on unlabelled batches, averaged over modality pairs; ``None`` without a pair."""
        if len(unlabelled) < 2:
            return None
        logits, aware = self._cross(unlabelled)
        pairs = list(itertools.combinations(logits, 2))
        if self.cac_pairing == "paired":
            terms = [paired_cac_loss(logits[a], logits[b], self.cac_temperature, self.reduction) for a, b in pairs]
        else:
            terms = [
                prototype_cac_loss(aware[a], logits[a], aware[b], logits[b], self.cac_temperature, self.reduction)
                for a, b in pairs
            ]
        return torch.stack(terms).mean()

    def training_step(self, batches: Mapping[str, Batch]) -> dict[str, torch.Tensor]:
        labelled = {k: b for k, b in batches.items() if not k.endswith(UNLABELLED)}
        unlabelled = {k[: -len(UNLABELLED)]: b["image"] for k, b in batches.items() if k.endswith(UNLABELLED)}
        losses, f_ds = self.supervised(labelled)
        total = sum(losses.values())
        losses["csc"] = self.csc(f_ds)
        total = total + self.alpha * losses["csc"]
        cac = self.cac(unlabelled)
        if cac is not None:
            losses["cac"] = cac
            total = total + self.beta * cac
        losses["loss"] = total
        return losses
