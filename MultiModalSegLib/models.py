"""The models manifest (``Resources/Models.json``): model bundles known by name, with their sha256.

A ``file`` entry is a path relative to the folder holding the manifest (``Resources/``). A ``url``
entry is looked for in the download cache (``$MMSEG_MODELS_CACHE``, else
``~/.cache/multimodalseg/models``) under the URL's file name.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

import jsonschema

from .atomic import write_text_atomic
from .errors import BundleError
from .resources import resources_dir, schema_validator

MANIFEST_FORMAT_VERSION = 1
MANIFEST_NAME = "Models.json"


@dataclass
class ModelEntry:
    """One model of the manifest. ``base_dir`` is the folder ``file`` is relative to."""

    name: str
    version: str
    description: str
    method: str
    modalities: list[str]
    labels: list[str]
    spacing: list[float]
    sha256: str
    licence: str
    file: str | None = None
    url: str | None = None
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    default: bool = False
    base_dir: Path = field(default_factory=resources_dir)

    @classmethod
    def from_dict(cls, d: dict, base_dir: Path) -> ModelEntry:
        keys = cls.__dataclass_fields__.keys() - {"base_dir"}
        return cls(**{k: d[k] for k in keys if k in d}, base_dir=base_dir)

    def resolve_path(self) -> Path:
        """Where the bundle lies on disk: ``base_dir/file``, or the download cache for a ``url``."""
        if self.file is not None:
            rel = PurePosixPath(self.file)
            if rel.is_absolute() or ".." in rel.parts:
                raise BundleError(
                    f"Model '{self.name}': file '{self.file}' must be relative to Resources/ without '..'; fix the manifest."
                )
            return self.base_dir / rel
        cached = models_cache_dir() / (PurePosixPath(urlparse(self.url or "").path).name or f"{self.name}.zip")
        if not cached.exists():
            raise BundleError(f"Model '{self.name}' is not downloaded yet; download {self.url} to {cached}.")
        return cached


def models_cache_dir() -> Path:
    """Folder holding downloaded model bundles."""
    env = os.environ.get("MMSEG_MODELS_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "multimodalseg" / "models"


def default_manifest_path() -> Path:
    return resources_dir() / MANIFEST_NAME


def _validator() -> jsonschema.protocols.Validator:
    return schema_validator("models_manifest")


def _describe(error: jsonschema.ValidationError, doc: dict) -> str:
    path = list(error.absolute_path)
    where = "manifest"
    if len(path) >= 2 and path[0] == "models" and isinstance(path[1], int):
        entry = doc["models"][path[1]]
        name = entry.get("name") if isinstance(entry, dict) else None
        where = f"model entry {path[1]}" + (f" ('{name}')" if name else "")
        path = path[2:]
    field_name = ".".join(str(p) for p in path) or "(entry)"
    if error.validator == "oneOf":
        return f"{where}: give exactly one of 'file' or 'url'"
    return f"{where}: field '{field_name}' is invalid ({error.message})"


def _validate(doc: dict, source: Path) -> None:
    errors = list(_validator().iter_errors(doc))
    if errors:
        error = jsonschema.exceptions.best_match(errors)
        raise BundleError(f"Models manifest {source}: {_describe(error, doc)}; fix the manifest.")
    names = [m["name"] for m in doc["models"]]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise BundleError(f"Models manifest {source}: model name(s) {duplicates} appear more than once; keep one each.")
    defaults = [m["name"] for m in doc["models"] if m.get("default")]
    if len(defaults) > 1:
        raise BundleError(f"Models manifest {source}: models {defaults} are all marked default; mark only one.")


def _read_document(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BundleError(f"Models manifest {path} cannot be read ({exc}); check the path.") from exc
    except json.JSONDecodeError as exc:
        raise BundleError(f"Models manifest {path} is not valid JSON ({exc}); fix the file.") from exc
    if isinstance(doc, dict) and isinstance(doc.get("format_version"), int):
        if doc["format_version"] > MANIFEST_FORMAT_VERSION:
            raise BundleError(
                f"Models manifest {path} was made by a newer MultiModalSeg (format {doc['format_version']}); "
                "upgrade MultiModalSeg."
            )
    _validate(doc, path)
    return doc


def load_manifest(path: str | Path | None = None) -> list[ModelEntry]:
    """Read and validate the manifest (default ``Resources/Models.json``; missing default -> no models)."""
    manifest = Path(path) if path is not None else default_manifest_path()
    if path is None and not manifest.exists():
        return []
    doc = _read_document(manifest)
    return [ModelEntry.from_dict(m, base_dir=manifest.parent) for m in doc["models"]]


def default_model(manifest_path: str | Path | None = None) -> ModelEntry:
    """The entry marked ``default``, else the first one."""
    entries = load_manifest(manifest_path)
    if not entries:
        raise BundleError(
            "No model is installed (the models manifest lists none); train one or pass a bundle path with --model."
        )
    return next((e for e in entries if e.default), entries[0])


def resolve_model(name_or_path: str | None, manifest_path: str | Path | None = None) -> tuple[Path, str | None]:
    """Bundle path and expected sha256: an existing path as is (sha256 None), else a manifest name; None -> default."""
    if name_or_path is None:
        entry = default_model(manifest_path)
        return entry.resolve_path(), entry.sha256
    candidate = Path(name_or_path).expanduser()
    if candidate.exists():
        return candidate, None
    entries = load_manifest(manifest_path)
    for entry in entries:
        if entry.name == name_or_path:
            return entry.resolve_path(), entry.sha256
    known = ", ".join(e.name for e in entries) or "none installed"
    raise BundleError(
        f"Model '{name_or_path}' is neither an existing bundle path nor a known model name (known: {known}); "
        "check the name or the path."
    )


def _merged(models: list[dict], entry: dict) -> list[dict]:
    """``models`` with ``entry`` in place of the one of the same name (or appended)."""
    if entry.get("default"):
        models = [{k: v for k, v in m.items() if k != "default"} for m in models]
    names = [m.get("name") for m in models]
    if entry.get("name") in names:
        models[names.index(entry.get("name"))] = entry
        return models
    return [*models, entry]


def add_to_manifest(entry: dict, manifest_path: str | Path | None = None) -> Path:
    """Add ``entry`` (replacing one of the same name) and write the manifest atomically.

    An entry marked ``default`` clears the flag on the others.
    """
    path = Path(manifest_path) if manifest_path is not None else default_manifest_path()
    if path.exists():
        doc = _read_document(path)
    else:
        doc = {"format_version": MANIFEST_FORMAT_VERSION, "models": []}
    doc["models"] = _merged(doc["models"], dict(entry))
    _validate(doc, path)
    write_text_atomic(path, json.dumps(doc, indent=2) + "\n")
    return path
