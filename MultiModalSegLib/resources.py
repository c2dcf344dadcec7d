"""Where the repository's ``Resources/`` folder (schemas, models manifest, sample data) lives."""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path

import jsonschema


def resources_dir() -> Path:
    """The ``Resources`` folder: ``$MMSEG_RESOURCES`` if set, else the one beside this package."""
    env = os.environ.get("MMSEG_RESOURCES")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "Resources"


def schema_path(name: str) -> Path:
    """Path of a JSON schema in ``Resources/Schemas`` (``name`` without ``.schema.json``)."""
    return resources_dir() / "Schemas" / f"{name}.schema.json"


@cache
def schema_validator(name: str) -> jsonschema.protocols.Validator:
    """A checked validator for the JSON schema ``Resources/Schemas/{name}.schema.json``."""
    schema = json.loads(schema_path(name).read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)
