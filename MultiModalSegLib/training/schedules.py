"""Learning-rate schedules: linear warm-up followed by cosine or polynomial decay."""

from __future__ import annotations

import math

import torch

from ..errors import ConfigError


def lr_factor(step: int, total: int, name: str = "cosine", warmup_steps: int = 0, power: float = 0.9) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based) of ``total`` steps."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min((step - warmup_steps) / max(total - warmup_steps, 1), 1.0)
    if name == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if name == "poly":
        return (1.0 - progress) ** power
    if name == "constant":
        return 1.0
    raise ConfigError(f"unknown schedule {name!r}; choose cosine, poly or constant.")


def build_scheduler(optimizer: torch.optim.Optimizer, total: int, spec: dict) -> torch.optim.lr_scheduler.LambdaLR:
    name = spec.get("name", "cosine")
    warmup = int(spec.get("warmup_steps", 0))
    power = float(spec.get("power", 0.9))
    lr_factor(0, total, name, warmup, power)  # validate the name now
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total, name, warmup, power))
