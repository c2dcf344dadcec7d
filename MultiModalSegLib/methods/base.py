"""The interface every method implements, and the modality router used by per-modality networks."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import ClassVar

import torch
from torch import nn

from ..errors import ConfigError, InputError
from ..losses import as_target, dice_ce_loss
from ..modalities import get_modality
from ..networks import SliceWise, UNet
from ..networks import add_modality as add_norm_sets
from ..networks.exported import build_exported_network
from ..networks.member_ensemble import MemberEnsemble

Batch = Mapping[str, torch.Tensor]  # {"image": [B,1,...], "label": [B,1,...]}
BATCH_FORWARDS = ("mixed", "per_modality")


def checked_batch_forward(method: Method, batch_forward: str) -> str:
    """``batch_forward`` of a baseline (see :meth:`Method.mixed_logits`), validated: ``"mixed"``
    needs a U-Net-family network (whose modality-specific layers can split a mixed batch)."""
    if batch_forward not in BATCH_FORWARDS:
        raise ConfigError(f"{method.name}: batch_forward {batch_forward!r} is unknown; choose one of {list(BATCH_FORWARDS)}.")
    inner = method.net.net if isinstance(method.net, SliceWise) else method.net
    if batch_forward == "mixed" and not isinstance(inner, UNet):
        raise ConfigError(
            f"{method.name}: a mixed CT+MR batch needs a U-Net network ('unet3d', 'unet2d', 'unet2.5d'), "
            f"not {method.network_spec['name']!r}; set method_params batch_forward to 'per_modality'."
        )
    return batch_forward


class Method(nn.Module):
    """A training recipe that owns its networks and losses.

    Subclasses set :attr:`name` (the registry key) and :attr:`default_norm`, and may override
    :meth:`build_inference_network` and :meth:`training_step`. ``training_step`` receives one
    batch per modality, drawn independently (unpaired), and returns a dict of scalar tensors whose
    ``"loss"`` entry is minimised. :meth:`inference_network` returns the module that is exported
    to a bundle; it is called as ``net(image, modality)``.

    :meth:`add_modality` gives a trained method a further modality (fine-tuning on a few labelled
    volumes of it); :meth:`parameter_groups` lets the optimiser train some parameters slower.
    """

    name: ClassVar[str] = ""
    default_norm: ClassVar[str] = "batch"
    fixed_norm: ClassVar[str | None] = None  # a method that needs one normalisation forces it
    alternating: ClassVar[bool] = False  # True: the engine steps the optimiser once per modality's batch
    # What the generated methods table (``training/methods_table.py``) says about the method:
    paper: ClassVar[str] = ""  # the paper it follows or that defines the baseline (short citation)
    equations: ClassVar[str] = ""  # the equations implemented
    loss_summary: ClassVar[str] = "Dice + CE per modality, summed (weights 1, 1)"  # the loss and its default weights
    inference_summary: ClassVar[str] = "the trained network, called as net(image, modality)"  # what is exported
    uses_unlabelled: ClassVar[bool] = False  # True: batches also hold "<modality>:unlabelled" (images only)
    # learning-rate factor of every parameter that existed before add_modality (see there)
    added_modality_lr_scale: ClassVar[float] = 0.1
    # True: the method uses its network only as ``net(image, modality)``, so ``net`` may be an ensemble
    # (:meth:`train_as_ensemble`)
    trains_ensembles: ClassVar[bool] = False

    def __init__(self, network: Mapping, modalities: Sequence[str], n_classes: int) -> None:
        super().__init__()
        self.modalities = list(modalities)
        self.n_classes = n_classes
        self.network_spec = self.complete_network_spec(network, modalities, n_classes)
        self.net = self.build_inference_network(self.network_spec, self.modalities)
        self.seg_loss = dice_ce_loss()
        self.lr_scales: dict[str, float] = {}  # parameter name -> learning-rate factor (parameter_groups)
        self.added_names: list[str] = []  # what add_modality added, over all its calls

    @classmethod
    def complete_network_spec(cls, network: Mapping, modalities: Sequence[str], n_classes: int) -> dict:
        """The network's name and full parameters, as stored in a bundle's metadata."""
        spec = {"name": network.get("name", "unet3d"), "params": copy.deepcopy(dict(network.get("params", {})))}
        params = spec["params"]
        params["out_channels"] = n_classes
        params["modalities"] = list(modalities)
        params["norm"] = cls.fixed_norm or params.get("norm", cls.default_norm)
        return spec

    @classmethod
    def reference_network(cls, features: Sequence[int]) -> dict:
        """The method's network config with encoder widths ``features`` (for the methods table's
        parameter counts); a method whose network is not the U-Net overrides it."""
        return {"name": "unet3d", "params": {"features": list(features)}}

    @classmethod
    def build_inference_network(cls, network_spec: Mapping, modalities: Sequence[str]) -> nn.Module:
        """The untrained inference network described by ``network_spec`` (a bundle's ``network``): the
        method's entry of :data:`..networks.exported.EXPORTED_NETWORKS`, which inference uses too."""
        return build_exported_network(cls.name, network_spec, modalities)

    def inference_network(self) -> nn.Module:
        return self.net

    def train_as_ensemble(self, members: int) -> None:
        """Make :attr:`net` a :class:`..networks.member_ensemble.MemberEnsemble` of ``members`` networks of
        its architecture (the current one first), trained together: every loss sees the log of their mean
        class probabilities, the output an ensemble bundle's network gives at inference, and the exported
        state holds each member under ``members.<i>.``. Fine-tuning an ensemble bundle trains every member
        this way. The choice (rather than training each member alone on its own loss): one run, one
        progress log and one checkpoint, so fine-tuning an ensemble stops, resumes and reports as fine-tuning
        one network does. Only a method that uses its network as ``net(image, modality)`` alone can
        (:attr:`trains_ensembles`); the others reach into its parts."""
        if members < 2:
            raise ConfigError(f"an ensemble trains two or more networks, not {members}.")
        if not self.trains_ensembles:
            from .registry import METHODS

            able = ", ".join(sorted(n for n, c in METHODS.items() if c.trains_ensembles))
            raise ConfigError(f"method {self.name} uses parts of its network, so it cannot train an ensemble of "
                              f"{members} networks; methods that can: {able}.")
        fresh = [self.build_inference_network(self.network_spec, self.modalities) for _ in range(members - 1)]
        self.net = MemberEnsemble([self.net, *fresh])

    def pretraining_network(self) -> nn.Module:
        """The network self-supervised pretraining trains (``training.pretraining``), called as
        ``net(image, modality)``; the trained network ``self.net`` unless a method says otherwise."""
        return self.net

    # ----- a further modality

    def add_modality(self, new: str, like: str) -> list[str]:
        """Add modality ``new`` (a registered profile) with its own parameters initialised from
        modality ``like``'s, so that before any training ``new`` is segmented exactly as ``like``
        and the other modalities' outputs do not change (no existing weight is touched).

        ``new`` is appended to :attr:`modalities` and to ``network_spec["params"]["modalities"]``,
        so an exported bundle lists it and :meth:`build_inference_network` rebuilds the network.
        Returns the names (as in :meth:`state_dict`) of the entries added, or grown, for ``new``:
        its parameters and buffers (e.g. BatchNorm running statistics). Subclasses add their
        modality-specific parts in :meth:`_add_modality_parameters`; the default copies ``like``'s
        set of every modality-specific normalisation layer (:class:`..networks.ModalityNorm`), so a
        method with none (e.g. ``joint`` with shared normalisation) adds nothing.

        Training afterwards (fine-tuning on a few labelled volumes of ``new`` mixed with old-modality
        cases): the added parameters train at the full learning rate and every parameter that
        existed before, shared or another modality's, at ``added_modality_lr_scale`` (0.1) times
        it, through :attr:`lr_scales` (entries already there are kept; ``lr_scales = {}`` trains
        everything at one rate, a factor 0 freezes). The choice: the new modality needs its own
        parameters to move fast, while the old modalities' Dice must stay where it was; the slow
        shared rate still lets the shared kernels adapt to ``new`` (a method that adds no trainable
        parameter, e.g. ``joint`` or ``mulmodseg``, learns ``new`` only through them).
        """
        name = get_modality(new).name
        if name in self.modalities:
            raise InputError(f"modality {name} is already one of this model's modalities {self.modalities}; nothing to add.")
        source = next((m for m in self.modalities if m.casefold() == str(like).strip().casefold()), None)
        if source is None:
            raise InputError(f"like={like!r} is not one of this model's modalities {self.modalities}; start {name} from one of them.")
        before = {k: tuple(v.shape) for k, v in self.state_dict().items()}
        self._add_modality_parameters(name, source)
        self.modalities.append(name)
        self.network_spec["params"]["modalities"] = list(self.modalities)
        added = [k for k, v in self.state_dict().items() if before.get(k) != tuple(v.shape)]
        self.added_names = [*self.added_names, *added]
        for key, _ in self.named_parameters():
            if key not in self.added_names:
                self.lr_scales.setdefault(key, self.added_modality_lr_scale)
        return added

    def _add_modality_parameters(self, new: str, like: str) -> None:
        """Create ``new``'s own parameters as copies of ``like``'s (see :meth:`add_modality`)."""
        add_norm_sets(self, new, copy_from=like)

    def parameter_groups(self, lr: float) -> list[dict]:
        """Optimiser parameter groups: every parameter at ``lr``, except those named in
        :attr:`lr_scales` (``{name: factor}``, empty by default: one group, as
        ``parameters()``), which train at ``lr * factor`` (factor 0 freezes them: AdamW's
        decoupled weight decay is scaled by the lr too). The engine's schedule scales every group."""
        scales = getattr(self, "lr_scales", {}) or {}
        groups: dict[float, list[nn.Parameter]] = {}
        for name, param in self.named_parameters():
            groups.setdefault(float(scales.get(name, 1.0)), []).append(param)
        return [{"params": params, "lr": lr * factor} for factor, params in groups.items()]

    def set_progress(self, step: int, total_steps: int) -> None:
        """Called by the engine before each ``training_step`` (for step-dependent loss weights)."""

    def logits(self, image: torch.Tensor, modality: str) -> torch.Tensor:
        return self.net(image, modality)

    def mixed_logits(self, batches: Mapping[str, Batch]) -> dict[str, torch.Tensor]:
        """Every modality's logits from *one* forward pass of all the images concatenated along the
        batch axis (in the order of ``batches``), so that a shared BatchNorm normalises with the
        statistics of the mixed batch, as in UMMKD's Joint ("half of the batch as CT and the other
        half as MRI"); modality-specific layers still see only their own modality's items
        (:data:`..networks.norms.Segments`)."""
        names = list(batches)
        images = [batches[m]["image"] for m in names]
        if len({tuple(x.shape[1:]) for x in images}) > 1:
            shapes = {m: tuple(x.shape[1:]) for m, x in zip(names, images, strict=True)}
            raise InputError(f"a mixed CT+MR batch needs patches of one shape, got {shapes}; use batch_forward 'per_modality'.")
        segments = tuple((m, x.shape[0]) for m, x in zip(names, images, strict=True))
        logits = self.net(torch.cat(images), segments)
        return dict(zip(names, torch.split(logits, [n for _, n in segments]), strict=True))

    def segmentation_losses(self, batches: Mapping[str, Batch]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Per-modality logits and Dice+CE losses (``L_seg`` of every paper); the logits come from
        one forward per modality, or from one forward of the mixed batch when the method's
        ``batch_forward`` is ``"mixed"`` (:meth:`mixed_logits`). The losses are per modality either way."""
        mixed = self.mixed_logits(batches) if getattr(self, "batch_forward", "per_modality") == "mixed" and len(batches) > 1 else None
        logits, losses = {}, {}
        for modality, batch in batches.items():
            logits[modality] = mixed[modality] if mixed is not None else self.logits(batch["image"], modality)
            losses[f"seg_{modality}"] = self.seg_loss(logits[modality], as_target(batch["label"]))
        return logits, losses

    def training_step(self, batches: Mapping[str, Batch]) -> dict[str, torch.Tensor]:
        _, losses = self.segmentation_losses(batches)
        losses["loss"] = sum(losses.values())
        return losses
