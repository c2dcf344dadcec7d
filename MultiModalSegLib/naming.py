"""Names of new models: a model made here never takes the name of a model in the models manifest.

A shipped (or listed) model is found by its name, so a bundle trained from the shipped recipe or
fine-tuned from a shipped model under the same name would be mistaken for it (``mmseg models
import`` would take it for a damaged copy). :func:`derived_model_name` gives such a bundle a name of
its own, ``<name>-<trained|finetuned>-<date>-<time>``; :func:`check_new_model_name` refuses a name a
user chose that the manifest already holds.
"""

from __future__ import annotations

import datetime
from pathlib import Path

from .errors import BundleError, ConfigError


def manifest_model_names(manifest_path: str | Path | None = None) -> set[str]:
    """Names of the models manifest's models (none when the manifest cannot be read)."""
    from .models import load_manifest

    try:
        return {e.name for e in load_manifest(manifest_path)}
    except (BundleError, OSError):
        return set()


def timestamp(now: datetime.datetime | None = None) -> str:
    """``YYYYMMDD-HHMMSS`` (local time), the suffix of a derived name."""
    return (now or datetime.datetime.now()).strftime("%Y%m%d-%H%M%S")


def derived_model_name(base: str, kind: str, manifest_path: str | Path | None = None, stamp: str | None = None) -> str:
    """``base`` when no manifest model has that name, else ``<base>-<kind>-<stamp>`` (default stamp: now)."""
    if base not in manifest_model_names(manifest_path):
        return base
    return f"{base}-{kind}-{stamp or timestamp()}"


def check_new_model_name(name: str, option: str = "--name", manifest_path: str | Path | None = None) -> str:
    """``name``, unless a models-manifest model has it: then one error saying to choose another."""
    if name in manifest_model_names(manifest_path):
        raise ConfigError(
            f"{option} {name}: a model of the models manifest has this name, and a new model must not take it "
            f"(it would be mistaken for that model); choose another name, e.g. {name}-{timestamp()[:8]}."
        )
    return name
