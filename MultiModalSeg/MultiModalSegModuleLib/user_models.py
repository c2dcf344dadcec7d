"""Models a user fine-tunes in Slicer: kept in a per-user writable folder inside the models cache.

``<models cache>/trained/Models.json`` is a models manifest of its own (same schema as the shipped
one) whose entries point at ``<models cache>/trained/Models/<name>-<version>.zip``. The extension's
install folder is never written to, so these models survive an extension update and work on a
read-only installation. The panel lists them beside the shipped models.
"""

from __future__ import annotations

from pathlib import Path

from .process import ensure_library_importable

USER_FOLDER_NAME = "trained"


def user_models_folder(models_cache: str | Path | None = None) -> Path:
    """The per-user folder of fine-tuned models (``models_cache``: the Logic's cache setting, None:
    the library's default, ``~/.cache/multimodalseg/models`` or ``$MMSEG_MODELS_CACHE``)."""
    ensure_library_importable()
    from MultiModalSegLib.models import models_cache_dir

    return models_cache_dir(models_cache) / USER_FOLDER_NAME


def user_models_manifest(models_cache: str | Path | None = None) -> Path:
    """The manifest listing the user's fine-tuned models (it may not exist yet)."""
    return user_models_folder(models_cache) / "Models.json"


def user_model_names(models_cache: str | Path | None = None) -> list[str]:
    """Names of the user's fine-tuned models ([] before the first one)."""
    manifest = user_models_manifest(models_cache)
    if not manifest.is_file():
        return []
    from MultiModalSegLib.models import load_manifest

    return [entry.name for entry in load_manifest(manifest)]
