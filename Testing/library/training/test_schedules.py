import math

import pytest
import torch

from MultiModalSegLib.errors import ConfigError
from MultiModalSegLib.training.schedules import build_scheduler, lr_factor


def test_warmup_then_cosine():
    assert lr_factor(0, 100, "cosine", warmup_steps=10) == pytest.approx(0.1)
    assert lr_factor(9, 100, "cosine", warmup_steps=10) == pytest.approx(1.0)
    assert lr_factor(10, 100, "cosine", warmup_steps=10) == pytest.approx(1.0)
    mid = 10 + 45
    assert lr_factor(mid, 100, "cosine", warmup_steps=10) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(100, 100, "cosine", warmup_steps=10) == pytest.approx(0.0, abs=1e-12)


def test_poly_and_unknown():
    assert lr_factor(50, 100, "poly", power=0.9) == pytest.approx(0.5**0.9)
    with pytest.raises(ConfigError, match="unknown schedule"):
        lr_factor(0, 10, "step")


def test_scheduler_drives_the_optimiser():
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = build_scheduler(opt, 10, {"name": "poly", "warmup_steps": 2})
    lrs = []
    for _ in range(4):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.5) and lrs[1] == pytest.approx(1.0) and lrs[3] < lrs[2] <= 1.0
