"""Where the repository's ``Resources/`` folder (schemas, models manifest, sample data) lives."""

from __future__ import annotations

import os
from pathlib import Path


def resources_dir() -> Path:
    """The ``Resources`` folder: ``$MMSEG_RESOURCES`` if set, else the one beside this package."""
    env = os.environ.get("MMSEG_RESOURCES")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "Resources"


def schema_path(name: str) -> Path:
    """Path of a JSON schema in ``Resources/Schemas`` (``name`` without ``.schema.json``)."""
    return resources_dir() / "Schemas" / f"{name}.schema.json"
