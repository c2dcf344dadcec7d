"""Pretraining of a method's network before its training: a stand-in for a pretrained backbone.

LSSC's paper starts its Transformer from ImageNet weights and says that without them "the
performance will suffer"; no such weights are shipped or downloaded here. Two stand-ins, both
trained on the run's own data, are available; each trains only the method's network (its
``pretraining_network``, called ``net(image, modality)``), without the method's own terms:

- ``"masked_reconstruction"`` (self-supervised, labels unused, unlabelled cases included): as in
  SimMIM / Models Genesis, random cubes of each patch are blanked out and the network learns to
  fill them in from their context. Its output (the class logits) goes through a temporary 1x1x1
  convolution to one intensity channel; the loss is the mean squared error on the hidden voxels.
- ``"segmentation"`` (supervised on the run's labelled training batches, e.g. phantoms with their
  label maps): the network alone with Dice + cross-entropy, so that it already segments when the
  method's auxiliary and consistency terms start.

The temporary head is then dropped and the method trains as usual from the pretrained weights, so
a bundle's network and its state-dict keys are unchanged. Configured in a training config as
``"pretrain": {"task": "masked_reconstruction" | "segmentation", "steps": N, "lr": L,
"mask_ratio": 0.5, "mask_block": 4, "warmup_steps": W}`` (``steps`` required, the others
optional): ``N`` optimiser steps (AdamW, no weight decay, linear warm-up over ``W`` steps, a tenth
by default, then cosine decay) on the batches of the run's first ``N`` steps (the ``mask_*``
entries concern the reconstruction). It runs once, when a run starts from scratch (not on a
resume: the checkpoint holds its result).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from ..device import autocast, grad_scaler
from ..errors import ConfigError
from .schedules import lr_factor

PRETRAIN_TASKS = ("masked_reconstruction", "segmentation")


@dataclass(frozen=True)
class PretrainSpec:
    """A validated ``pretrain`` block of a training config (see the module docstring)."""

    steps: int
    task: str = "masked_reconstruction"
    lr: float = 1e-3
    mask_ratio: float = 0.5
    mask_block: int = 4
    warmup_steps: int | None = None  # default: a tenth of the steps

    @classmethod
    def from_config(cls, raw: Mapping) -> PretrainSpec:
        allowed = {"task", "steps", "lr", "mask_ratio", "mask_block", "warmup_steps"}
        problem = None
        if set(raw) - allowed or "steps" not in raw:
            problem = f"keys {sorted(raw)}"
        elif raw.get("task", "masked_reconstruction") not in PRETRAIN_TASKS:
            problem = f"task {raw.get('task')!r}"
        elif not isinstance(raw["steps"], int) or raw["steps"] < 1:
            problem = f"steps {raw['steps']!r}"
        elif not 0.0 < float(raw.get("mask_ratio", 0.5)) < 1.0:
            problem = f"mask_ratio {raw.get('mask_ratio')!r}"
        elif not int(raw.get("mask_block", 4)) >= 1 or not float(raw.get("lr", 1e-3)) > 0:
            problem = f"mask_block {raw.get('mask_block')!r} / lr {raw.get('lr')!r}"
        if problem:
            raise ConfigError(
                f"\"pretrain\" must be {{\"steps\": N >= 1, \"task\": one of {list(PRETRAIN_TASKS)}, \"lr\": > 0, "
                f"\"mask_ratio\": in (0, 1), \"mask_block\": >= 1 voxels, \"warmup_steps\": W}}; check {problem}."
            )
        return cls(**dict(raw))

    @property
    def warmup(self) -> int:
        return self.steps // 10 if self.warmup_steps is None else int(self.warmup_steps)


def block_mask(shape: tuple[int, ...], ratio: float, block: int, generator: torch.Generator) -> torch.Tensor:
    """``[B, 1, *S]`` mask (1 = hidden): each cube of ``block`` voxels per axis (cut at the border)
    is hidden with probability ``ratio``, independently per item."""
    b, _, *spatial = shape
    coarse = [math.ceil(s / block) for s in spatial]
    hidden = (torch.rand((b, 1, *coarse), generator=generator) < ratio).float()
    full = hidden.repeat_interleave(block, 2).repeat_interleave(block, 3).repeat_interleave(block, 4)
    return full[:, :, : spatial[0], : spatial[1], : spatial[2]]


def reconstruction_loss(network: nn.Module, head: nn.Module, image: torch.Tensor, modality: str, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error of the reconstruction on the hidden voxels (all voxels if none is hidden)."""
    prediction = head(network(image * (1 - mask), modality).float())
    error = (prediction - image.float()) ** 2
    hidden = mask.sum()
    return (error * mask).sum() / hidden if float(hidden) > 0 else error.mean()


def _read_out_channels(network: nn.Module, batches: Mapping[str, Mapping[str, torch.Tensor]], device: torch.device) -> int:
    out_channels = getattr(getattr(network, "core", network), "out_channels", None)
    if out_channels is None:
        key, batch = next(iter(batches.items()))
        with torch.no_grad():
            out_channels = network(batch["image"][:1].to(device), key.split(":")[0]).shape[1]
    return int(out_channels)


def pretrain_network(
    network: nn.Module,
    batches: Callable[[int], Mapping[str, Mapping[str, torch.Tensor]]],
    spec: PretrainSpec,
    device: torch.device,
    amp: bool = False,
    seed: int = 0,
) -> dict:
    """Pretrain ``network`` (called ``network(image, modality)``) for ``spec.steps`` steps on
    ``batches(step)``, the engine's ``{key: {"image": ..., "label": ...}}`` of a step (keys
    ``"<modality>"``, and ``"<modality>:unlabelled"`` without labels). Returns a summary (first
    and last loss, seconds). The global random state is left as it was."""
    from ..losses import as_target, dice_ce_loss

    head = None
    if spec.task == "masked_reconstruction":
        with torch.random.fork_rng(devices=[]):  # the head's initialisation leaves the global random state alone
            torch.manual_seed(seed)
            head = nn.Conv3d(_read_out_channels(network, batches(0), device), 1, kernel_size=1).to(device)
    seg_loss = dice_ce_loss()
    params = [p for p in network.parameters() if p.requires_grad] + (list(head.parameters()) if head is not None else [])
    optimizer = torch.optim.AdamW(params, lr=spec.lr, weight_decay=0.0)
    scaler = grad_scaler(device, amp)
    generator = torch.Generator().manual_seed(seed)
    was_training = network.training
    network.train()
    losses, t0 = [], time.time()
    for step in range(spec.steps):
        for group in optimizer.param_groups:
            group["lr"] = spec.lr * lr_factor(step, spec.steps, "cosine", spec.warmup)
        optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=device)
        with autocast(device, amp):
            for key, batch in batches(step).items():
                modality, image = key.split(":")[0], batch["image"].to(device)
                if head is not None:
                    mask = block_mask(tuple(image.shape), spec.mask_ratio, spec.mask_block, generator).to(device)
                    total = total + reconstruction_loss(network, head, image, modality, mask)
                elif "label" in batch:
                    total = total + seg_loss(network(image, modality), as_target(batch["label"].to(device)))
        if not torch.isfinite(total):
            raise ConfigError(f"pretraining's loss became {float(total)} at step {step}; lower \"pretrain\" lr (now {spec.lr}).")
        scaler.scale(total).backward()
        scaler.step(optimizer)
        scaler.update()
        losses.append(float(total.detach()))
    network.train(was_training)
    k = max(1, min(10, spec.steps // 5))  # first and last losses averaged over a few steps
    return {
        "task": spec.task, "steps": spec.steps, "lr": spec.lr,
        "first_loss": round(sum(losses[:k]) / k, 6), "last_loss": round(sum(losses[-k:]) / k, 6),
        "seconds": round(time.time() - t0, 1),
    }
