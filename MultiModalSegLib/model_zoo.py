"""The model zoo: the manifest's models with their state, and what a user does with them.

Everything here works on a manifest (``manifest_path``, default :func:`models.default_manifest_path`)
and a download cache (``cache_dir``, default :func:`models.models_cache_dir`); the command line
(``mmseg models ...``) and the Slicer module call these functions.

States: ``installed`` (the bundle is on disk at the manifest's version), ``downloadable`` (a ``url``
entry not in the cache), ``update available`` (the cache holds another version of the model than
the manifest's: the old copy stays usable by path until the new one is downloaded and verified),
``missing`` (a ``file`` entry whose file is absent).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from .atomic import atomic_path
from .bundle import bundle_sha256, weights_intact
from .download import FileLock, ProgressCallback
from .errors import BundleError
from .models import (
    ModelEntry,
    cached_copies,
    ensure_downloaded,
    find_entry,
    load_manifest,
    models_cache_dir,
    read_bundle_metadata,
    remove_other_copies,
)

INSTALLED = "installed"
DOWNLOADABLE = "downloadable"
UPDATE_AVAILABLE = "update available"
MISSING = "missing"


@dataclass
class ModelStatus:
    """One manifest model and its state on this computer (see the module docstring)."""

    name: str
    version: str
    state: str
    description: str
    modalities: list[str]
    labels: list[str]
    default: bool
    source: str  # "file" (shipped with MultiModalSeg) or "url"
    url: str | None
    size: int | None
    path: str | None  # where the manifest's version lies (None unless installed)
    installed_version: str | None  # the version on disk, when one is

    def to_dict(self) -> dict:
        return asdict(self)


def _version_key(version: str) -> tuple:
    core, _, pre = version.partition("+")[0].partition("-")
    numbers = tuple(int(p) if p.isdigit() else 0 for p in core.split("."))
    return (*numbers, 0 if pre else 1, pre)


def version_newer(a: str, b: str) -> bool:
    """True if semantic version ``a`` is newer than ``b`` (a pre-release is older than its release)."""
    return _version_key(a) > _version_key(b)


def model_status(entry: ModelEntry, cache_dir: str | Path | None = None) -> ModelStatus:
    """The state of one manifest entry (nothing is hashed: :func:`verify_models` does that)."""
    path: Path | None = None
    installed_version: str | None = None
    if entry.url is None:
        file = entry.resolve_path()
        state = INSTALLED if file.exists() else MISSING
        path, installed_version = (file, entry.version) if file.exists() else (None, None)
    else:
        target = entry.cache_path(cache_dir)
        copies = cached_copies(entry.name, cache_dir)
        if target.exists():
            try:
                installed_version = str(read_bundle_metadata(target).get("version"))
            except BundleError:
                installed_version = None  # damaged: it is there all the same, and verify_models says what is wrong
        if target.exists() and installed_version in (None, entry.version):
            state, path = INSTALLED, target
        elif copies:
            installed_version = max((v for _, v in copies), key=_version_key)
            # an older copy: offer the update; a newer one (the manifest went back): the manifest's is downloadable
            state = UPDATE_AVAILABLE if version_newer(entry.version, installed_version) else DOWNLOADABLE
        else:
            state = DOWNLOADABLE
    return ModelStatus(
        name=entry.name,
        version=entry.version,
        state=state,
        description=entry.description,
        modalities=list(entry.modalities),
        labels=list(entry.labels),
        default=entry.default,
        source="url" if entry.url else "file",
        url=entry.url,
        size=entry.size,
        path=str(path) if path else None,
        installed_version=installed_version,
    )


def list_models(manifest_path: str | Path | None = None, cache_dir: str | Path | None = None) -> list[ModelStatus]:
    """Every model of the manifest with its state, in manifest order."""
    return [model_status(e, cache_dir) for e in load_manifest(manifest_path)]


def download_model(
    name: str,
    manifest_path: str | Path | None = None,
    cache_dir: str | Path | None = None,
    *,
    progress: ProgressCallback | None = None,
    cancel: Callable[[], bool] | None = None,
    timeout: float | None = None,
) -> Path:
    """Download model ``name`` (or its update) into the cache and return its path.

    Already installed: its sha256 is checked, and a damaged copy is fetched again. An update is fetched beside the old copy, verified, and
    only then replaces it. ``cancel()`` returning True stops it (the partial file is kept to resume).
    """
    entry = find_entry(name, manifest_path)
    if entry.url is None:
        path = entry.resolve_path()
        if not path.exists():
            raise BundleError(
                f"Model '{name}' is shipped with MultiModalSeg as {path}, which is missing; reinstall MultiModalSeg."
            )
        return path
    target = entry.cache_path(cache_dir)
    if target.is_file():
        with FileLock(target):
            if target.is_file() and bundle_sha256(target).lower() != entry.sha256.lower():
                target.unlink()  # damaged or altered: fetched again below, verified before it takes the name
    return ensure_downloaded(entry, cache_dir, progress=progress, cancel=cancel, timeout=timeout)


def _match_entry(path: Path, metadata: dict, sha: str, entries: list[ModelEntry]) -> ModelEntry:
    by_sha = [e for e in entries if e.sha256.lower() == sha]
    if by_sha:
        return by_sha[0]
    name = metadata.get("name")
    by_name = [e for e in entries if e.name == name]
    if by_name:
        e = by_name[0]
        if weights_intact(path):  # a whole bundle, only not the manifest's: another model with the same name
            made = (f"fine-tuned from {metadata['parent'].get('name')} {metadata['parent'].get('version')}"
                    if isinstance(metadata.get("parent"), dict) else f"trained {metadata.get('training', {}).get('date', 'on an unknown date')}")  # fmt: skip
            raise BundleError(
                f"{path} is a different model that has the same name as the manifest's model '{name}' (a name clash, not "
                f"a damaged file: its weights are intact; it is version {metadata.get('version')}, {made}, sha256 "
                f"{sha[:12]}..., the manifest's '{name}' is version {e.version}, sha256 {e.sha256[:12]}...); it was not "
                "imported. Use it directly with --model PATH, or give the models you make a name of their own "
                "(mmseg finetune --name, the \"bundle\" name of a training config)."
            )
        raise BundleError(
            f"{path} is model '{name}' version {metadata.get('version')} with sha256 {sha}, but the models manifest "
            f"expects version {e.version} with sha256 {e.sha256}, and its weights do not match its own metadata; it was "
            f"not imported. Fetch the file named by {e.url or e.file} again (the copy is damaged)."
        )
    known = ", ".join(e.name for e in entries) or "none"
    raise BundleError(
        f"{path} (model '{name}', sha256 {sha}) matches no model of the models manifest (known: {known}); "
        "it was not imported. Use it directly with --model PATH, or add an entry for it to the manifest."
    )


def import_model(
    file: str | Path, manifest_path: str | Path | None = None, cache_dir: str | Path | None = None
) -> tuple[ModelEntry, Path]:
    """Install a bundle file copied by hand, for a computer without network access.

    The file must match a manifest entry: by sha256, else by the model name in its metadata (then
    its sha256 must still match that entry, or nothing is imported). It is copied into the cache
    under the name a download would give it, its copy's sha256 checked again, then renamed into place;
    older cached versions of the model are removed afterwards. Returns the entry and the cached path.
    """
    file = Path(file).expanduser()
    if not file.is_file():
        raise BundleError(f"{file} is not a file; give the path of the model bundle (.zip) you copied.")
    metadata = read_bundle_metadata(file)
    sha = bundle_sha256(file)
    entry = _match_entry(file, metadata, sha, load_manifest(manifest_path))
    if entry.url is None:
        shipped = entry.resolve_path()
        if shipped.exists():
            return entry, shipped
        raise BundleError(
            f"Model '{entry.name}' is shipped with MultiModalSeg as {shipped}, which is missing; reinstall "
            f"MultiModalSeg, or use {file} directly with --model {file}."
        )
    target = entry.cache_path(cache_dir)
    with FileLock(target):
        if target.exists() and bundle_sha256(target) == sha:
            return entry, target
        with atomic_path(target, suffix=".import") as tmp:
            shutil.copyfile(file, tmp)
            if bundle_sha256(tmp) != sha:
                raise BundleError(f"Copying {file} to {target.parent} changed its bytes; check the disk and try again.")
    remove_other_copies(entry, cache_dir, keep=target)
    return entry, target


def installed_path(name: str, manifest_path: str | Path | None = None, cache_dir: str | Path | None = None) -> Path:
    """The on-disk bundle of model ``name`` at the manifest's version; raises if not installed."""
    entry = find_entry(name, manifest_path)
    status = model_status(entry, cache_dir)
    if status.state != INSTALLED:
        fix = f"run `mmseg models download {name}`" if entry.url else "reinstall MultiModalSeg"
        raise BundleError(f"Model '{name}' is not installed (state: {status.state}); {fix}.")
    return Path(status.path)


def export_model(
    name: str,
    dest: str | Path,
    manifest_path: str | Path | None = None,
    cache_dir: str | Path | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Copy the installed bundle of ``name`` to ``dest`` (a file, or a folder to put it in) after
    checking its sha256, e.g. to carry it to an offline computer and ``mmseg models import`` it there.
    An existing ``dest`` file is refused unless ``overwrite``."""
    entry = find_entry(name, manifest_path)
    source = installed_path(name, manifest_path, cache_dir)
    if source.is_dir():
        raise BundleError(f"Model '{name}' is a bundle folder ({source}); copy the folder itself.")
    if bundle_sha256(source).lower() != entry.sha256.lower():
        raise BundleError(
            f"Model '{name}' at {source} does not match its sha256 in the models manifest; it was not exported. "
            f"Run `mmseg models remove {name}` then `mmseg models download {name}`."
        )
    dest = Path(dest).expanduser()
    if dest.is_dir():
        dest = dest / source.name
    if dest.exists() and not overwrite:
        raise BundleError(f"{dest} already exists; choose another destination or pass --overwrite to replace it.")
    if dest.is_dir():
        raise BundleError(f"{dest} is a folder; give a file name or another folder.")
    with atomic_path(dest, suffix=".export") as tmp:
        shutil.copyfile(source, tmp)
    return dest


def remove_model(name: str, manifest_path: str | Path | None = None, cache_dir: str | Path | None = None) -> list[Path]:
    """Delete every cached copy (and partial download) of ``name``; shipped models cannot be removed."""
    entry = find_entry(name, manifest_path)
    if entry.url is None:
        raise BundleError(
            f"Model '{name}' is shipped with MultiModalSeg ({entry.resolve_path()}), not downloaded; "
            "remove its entry from the models manifest instead."
        )
    target = entry.cache_path(cache_dir)
    removed = [p for p, _ in cached_copies(name, cache_dir)]
    if target.exists() and target not in removed:
        removed.append(target)
    part = target.with_name(target.name + ".part")
    lock = Path(f"{target}.lock")
    if part.exists() and not lock.exists():
        removed.append(part)
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


@dataclass
class VerifyResult:
    name: str
    path: str | None
    ok: bool | None  # None: not installed, nothing to verify
    message: str


def verify_models(
    name: str | None = None, manifest_path: str | Path | None = None, cache_dir: str | Path | None = None
) -> list[VerifyResult]:
    """Recompute the sha256 of each installed model (or of ``name``) and compare it with the manifest."""
    entries = [find_entry(name, manifest_path)] if name else load_manifest(manifest_path)
    results = []
    for entry in entries:
        status = model_status(entry, cache_dir)
        if status.state != INSTALLED:
            results.append(VerifyResult(entry.name, None, None, f"not installed ({status.state})"))
            continue
        actual = bundle_sha256(status.path)
        if actual.lower() == entry.sha256.lower():
            results.append(VerifyResult(entry.name, status.path, True, "sha256 OK"))
        else:
            fix = (
                f"run `mmseg models remove {entry.name}` then `mmseg models download {entry.name}`"
                if entry.url
                else "reinstall MultiModalSeg"
            )
            results.append(
                VerifyResult(
                    entry.name, status.path, False,
                    f"sha256 {actual} does not match the manifest's {entry.sha256}: the file is damaged or altered; {fix}",
                )
            )
    return results


def disk_usage(cache_dir: str | Path | None = None) -> int:
    """Bytes used by the models cache folder."""
    folder = models_cache_dir(cache_dir)
    return sum(p.stat().st_size for p in folder.glob("*") if p.is_file()) if folder.is_dir() else 0


__all__ = [
    "DOWNLOADABLE",
    "INSTALLED",
    "MISSING",
    "UPDATE_AVAILABLE",
    "ModelStatus",
    "VerifyResult",
    "disk_usage",
    "download_model",
    "export_model",
    "import_model",
    "installed_path",
    "list_models",
    "model_status",
    "remove_model",
    "verify_models",
    "version_newer",
]
