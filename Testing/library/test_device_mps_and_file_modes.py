"""Apple's GPU as an explicit device choice, and files written atomically get the usual permissions."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from MultiModalSegLib import device
from MultiModalSegLib.atomic import write_text_atomic
from MultiModalSegLib.errors import InputError


def test_mps_is_a_device_choice(monkeypatch):
    assert "mps" in device.DEVICE_CHOICES
    monkeypatch.setattr(device, "mps_available", lambda: True)
    assert device.resolve_device("mps") == torch.device("mps")
    monkeypatch.setattr(device, "mps_available", lambda: False)
    with pytest.raises(InputError, match="no Apple GPU"):
        device.resolve_device("mps")


def test_atomic_writes_follow_the_umask_not_0600(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_text_atomic(tmp_path / "out.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
