"""Training checkpoints: written atomically, read with ``weights_only=True``."""

from __future__ import annotations

import io
from pathlib import Path

import torch

from ..atomic import atomic_path
from ..errors import ConfigError


def save_checkpoint(state: dict, path: Path) -> None:
    """Write ``state`` to ``path`` via a temporary file and a rename, so a crash never leaves half a file."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path | str, data: bytes | None = None, fix: str = "delete it or start with --restart.") -> dict:
    """The checkpoint at ``path`` (or its bytes ``data``, already read from there); one error with ``fix`` if unreadable."""
    try:
        return torch.load(io.BytesIO(data) if data is not None else path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint gets the same advice
        raise ConfigError(f"{path}: the checkpoint cannot be read ({exc.__class__.__name__}); {fix}") from exc
