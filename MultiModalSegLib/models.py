"""The models manifest (``Resources/Models.json``): model bundles known by name, with their sha256.

A ``file`` entry is a path relative to the folder holding the manifest (``Resources/``). A ``url``
entry is looked for in the download cache (``--cache``, else ``$MMSEG_MODELS_CACHE``, else
``~/.cache/multimodalseg/models``) under the URL's file name, and downloaded there on first use
(:mod:`MultiModalSegLib.download`: resumable, sha256-verified, atomic, locked). The manifest itself is
``Resources/Models.json`` unless ``$MMSEG_MODELS_MANIFEST`` (or a ``manifest_path`` argument) names another.
"""

from __future__ import annotations

import json
import os
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

import jsonschema

from .atomic import write_text_atomic
from .bundle import METADATA_NAME, validate_metadata
from .download import ProgressCallback, download_file
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
    size: int | None = None
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    gpu_seconds: dict[str, float] = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    training_data: str | None = None
    intended_use: str | None = None
    limitations: str | None = None
    default: bool = False
    base_dir: Path = field(default_factory=resources_dir)

    @classmethod
    def from_dict(cls, d: dict, base_dir: Path) -> ModelEntry:
        keys = cls.__dataclass_fields__.keys() - {"base_dir"}
        return cls(**{k: d[k] for k in keys if k in d}, base_dir=base_dir)

    @property
    def downloadable(self) -> bool:
        return self.url is not None

    def cache_path(self, cache_dir: str | Path | None = None) -> Path:
        """Where a ``url`` entry lives once downloaded: the cache folder / the URL's file name."""
        return models_cache_dir(cache_dir) / (PurePosixPath(urlparse(self.url or "").path).name or f"{self.name}.zip")

    def resolve_path(self, cache_dir: str | Path | None = None) -> Path:
        """Where the bundle lies on disk: ``base_dir/file``, or the download cache for a ``url``."""
        if self.file is not None:
            rel = PurePosixPath(self.file)
            if rel.is_absolute() or ".." in rel.parts:
                raise BundleError(
                    f"Model '{self.name}': file '{self.file}' must be relative to Resources/ without '..'; fix the manifest."
                )
            return self.base_dir / rel
        cached = self.cache_path(cache_dir)
        if not cached.exists():
            raise BundleError(
                f"Model '{self.name}' is not downloaded yet; run `mmseg models download {self.name}` "
                f"(or download {self.url} by hand and run `mmseg models import FILE`)."
            )
        return cached


def models_cache_dir(override: str | Path | None = None) -> Path:
    """Folder holding downloaded model bundles: ``override`` (``--cache``), else
    ``$MMSEG_MODELS_CACHE``, else ``$XDG_CACHE_HOME/multimodalseg/models`` (``~/.cache/...``)."""
    if override is not None:
        return Path(override).expanduser()
    env = os.environ.get("MMSEG_MODELS_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "multimodalseg" / "models"


def default_manifest_path() -> Path:
    """``$MMSEG_MODELS_MANIFEST`` if set, else ``Resources/Models.json``."""
    env = os.environ.get("MMSEG_MODELS_MANIFEST")
    return Path(env).expanduser() if env else resources_dir() / MANIFEST_NAME


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
    if path is None and not os.environ.get("MMSEG_MODELS_MANIFEST") and not manifest.exists():
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


def find_entry(name: str, manifest_path: str | Path | None = None) -> ModelEntry:
    """The manifest entry called ``name``; an unknown name raises :class:`BundleError` listing the known ones."""
    entries = load_manifest(manifest_path)
    for entry in entries:
        if entry.name == name:
            return entry
    known = ", ".join(e.name for e in entries) or "none"
    raise BundleError(f"Model '{name}' is not in the models manifest (known: {known}); check the name.")


def ensure_downloaded(
    entry: ModelEntry,
    cache_dir: str | Path | None = None,
    *,
    progress: ProgressCallback | None = None,
    cancel: Callable[[], bool] | None = None,
    timeout: float | None = None,
) -> Path:
    """The bundle path of ``entry``, downloading a ``url`` entry into the cache if it is not there.

    A cached file is trusted by name here; :func:`~MultiModalSegLib.bundle.load_bundle` checks its
    sha256 against the manifest before loading. A fresh download is verified before it is renamed
    into the cache; older cached versions of the same model are removed only after that.
    """
    if entry.url is None:
        return entry.resolve_path()
    target = entry.cache_path(cache_dir)
    if target.exists():
        try:
            same_version = read_bundle_metadata(target).get("version") == entry.version
        except BundleError:
            same_version = True  # unreadable: the size check below, or load_bundle's sha256 check, reports it
        if same_version and (entry.size is None or target.stat().st_size == entry.size):
            return target
        # another version under the same file name, or a damaged copy: fetched again, replaced once verified
    kwargs = {} if timeout is None else {"timeout": timeout}
    path = download_file(
        entry.url, target, sha256=entry.sha256, size=entry.size, model=entry.name,
        progress=progress, cancel=cancel, **kwargs,
    )
    remove_other_copies(entry, cache_dir, keep=path)
    return path


def read_bundle_metadata(path: str | Path) -> dict:
    """A bundle's ``metadata.json`` (zip or folder), schema-validated, without reading the weights."""
    path = Path(path)
    source = f"{path}/{METADATA_NAME}"
    try:
        if path.is_dir():
            raw = (path / METADATA_NAME).read_bytes()
        else:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
                nested = [n for n in names if n.count("/") == 1 and n.endswith("/" + METADATA_NAME)]
                member = METADATA_NAME if METADATA_NAME in names else (nested[0] if len(nested) == 1 else None)
                if member is None:
                    raise BundleError(f"{path} has no {METADATA_NAME}; it is not a MultiModalSeg model bundle.")
                raw = zf.read(member)
        metadata = json.loads(raw.decode("utf-8"))
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise BundleError(f"{path} is not a readable model bundle ({exc}); check the file.") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{source} is not valid JSON ({exc}); the bundle is damaged, fetch it again.") from exc
    validate_metadata(metadata, source)
    return metadata


def cached_copies(name: str, cache_dir: str | Path | None = None) -> list[tuple[Path, str]]:
    """(path, version) of every bundle in the cache whose metadata names model ``name``."""
    folder = models_cache_dir(cache_dir)
    out = []
    for path in sorted(folder.glob("*.zip")) if folder.is_dir() else []:
        try:
            metadata = read_bundle_metadata(path)
        except BundleError:
            continue
        if metadata.get("name") == name:
            out.append((path, str(metadata.get("version"))))
    return out


def remove_other_copies(entry: ModelEntry, cache_dir: str | Path | None = None, *, keep: Path) -> list[Path]:
    """Delete cached bundles of ``entry``'s model other than ``keep`` (an update replaced them)."""
    removed = []
    for path, _ in cached_copies(entry.name, cache_dir):
        if path.resolve() != Path(keep).resolve():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def resolve_model(
    name_or_path: str | None,
    manifest_path: str | Path | None = None,
    *,
    cache_dir: str | Path | None = None,
    download: bool = True,
    progress: ProgressCallback | None = None,
) -> tuple[Path, str | None]:
    """Bundle path and expected sha256: a manifest name first, else an existing path (sha256 None); None -> default.

    A manifest name always means the manifest's model, verified against its sha256: a file or folder
    of the same name in the working folder cannot stand in for it (write ``./NAME`` to mean the path).
    A ``url`` entry not in the cache yet is downloaded first (``download=False``: raise instead).
    """
    if name_or_path is None:
        entry = default_model(manifest_path)
    else:
        entries = load_manifest(manifest_path)
        entry = next((e for e in entries if e.name == name_or_path), None)
        if entry is None:
            candidate = Path(name_or_path).expanduser()
            if candidate.exists():
                return candidate, None
            known = ", ".join(e.name for e in entries) or "none installed"
            raise BundleError(
                f"Model '{name_or_path}' is neither an existing bundle path nor a known model name (known: {known}); "
                "check the name or the path."
            )
    if entry.url is not None and download:
        return ensure_downloaded(entry, cache_dir, progress=progress), entry.sha256
    return entry.resolve_path(cache_dir), entry.sha256


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
