"""Which model bundles are trusted, and the one place a model is opened for use.

Trust model: a bundle is *verified* when its sha256 is the models manifest's (a model named from
the manifest is always checked so; a bundle given by path is matched by its sha256), *trusted* when
its sha256 is in the user's trusted list (``mmseg models trust PATH`` adds it), and otherwise
*unverified*: it is loaded, since its weights cannot execute anything, with a warning that names it.
A bundle given by path that claims a manifest model's name and version but not its sha256 is an
altered copy of that model and is refused.

The trusted list is a text file of sha256 values (one a line, ``#`` comments): ``$MMSEG_TRUSTED_MODELS``,
else ``$XDG_CONFIG_HOME/multimodalseg/trusted_models.txt`` (``~/.config/...``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .atomic import write_text_atomic
from .bundle import Bundle, bundle_sha256, load_bundle
from .errors import BundleError
from .models import ModelEntry, load_manifest, read_bundle_metadata, resolve_model

VERIFIED, TRUSTED, UNVERIFIED = "verified", "trusted", "unverified"
_SHA = re.compile(r"^[0-9a-fA-F]{64}$")


@dataclass(frozen=True)
class Provenance:
    """Where a loaded bundle's trust comes from: ``status`` (verified / trusted / unverified) and why."""

    status: str
    sha256: str | None
    message: str


def trusted_list_path(override: str | Path | None = None) -> Path:
    """The user's trusted list: ``override``, else ``$MMSEG_TRUSTED_MODELS``, else the config folder."""
    if override is not None:
        return Path(override).expanduser()
    env = os.environ.get("MMSEG_TRUSTED_MODELS")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CONFIG_HOME")
    return (Path(xdg) if xdg else Path.home() / ".config") / "multimodalseg" / "trusted_models.txt"


def trusted_hashes(list_path: str | Path | None = None) -> set[str]:
    """The sha256 values of the trusted list (an absent list is empty)."""
    path = trusted_list_path(list_path)
    if not path.is_file():
        return set()
    words = (line.split("#", 1)[0].split() for line in path.read_text(encoding="utf-8").splitlines())
    return {w[0].lower() for w in words if w and _SHA.match(w[0])}


def trust_bundle(bundle: str | Path, list_path: str | Path | None = None) -> tuple[str, Path]:
    """Add ``bundle``'s sha256 to the trusted list (after checking it is a readable bundle); returns (sha256, list)."""
    bundle = Path(bundle).expanduser()
    metadata = read_bundle_metadata(bundle)
    sha = bundle_sha256(bundle)
    path = trusted_list_path(list_path)
    if sha in trusted_hashes(path):
        return sha, path
    old = path.read_text(encoding="utf-8") if path.is_file() else "# sha256 of model bundles trusted by this user (mmseg models trust)\n"
    if old and not old.endswith("\n"):
        old += "\n"
    line = f"{sha}  # {metadata.get('name')} {metadata.get('version')} {bundle.resolve()}\n"
    write_text_atomic(path, old + line)
    return sha, path


def bundle_provenance(
    path: str | Path, manifest_path: str | Path | None = None, trusted_list: str | Path | None = None
) -> Provenance:
    """The trust of a bundle given by path (see the module docstring); raises for an altered manifest model."""
    path = Path(path)
    sha = bundle_sha256(path).lower()
    entries = load_manifest(manifest_path)
    match = next((e for e in entries if e.sha256.lower() == sha), None)
    if match is not None:
        return Provenance(VERIFIED, sha, f"sha256 matches the models manifest's {match.name} {match.version}")
    if sha in trusted_hashes(trusted_list):
        return Provenance(TRUSTED, sha, f"sha256 is in the trusted list {trusted_list_path(trusted_list)}")
    metadata = read_bundle_metadata(path)
    claimed = next((e for e in entries if _claims(metadata, e)), None)
    if claimed is not None:
        raise BundleError(
            f"Model bundle {path} claims to be {claimed.name} {claimed.version} but its sha256 {sha} is not the "
            f"models manifest's ({claimed.sha256}): it was altered and was not loaded; use --model {claimed.name}."
        )
    return Provenance(
        UNVERIFIED, sha,
        f"model bundle {path} is unverified (sha256 {sha} is neither in the models manifest nor in the trusted "
        f"list); check where it came from, then `mmseg models trust {path}` to silence this warning",
    )  # fmt: skip


def _claims(metadata: dict, entry: ModelEntry) -> bool:
    """True if ``metadata`` names ``entry``'s model and version (by the entry's name or its bundle's)."""
    if metadata.get("version") != entry.version:
        return False
    if metadata.get("name") == entry.name:
        return True
    try:
        path = entry.resolve_path()
        return path.exists() and read_bundle_metadata(path).get("name") == metadata.get("name")
    except BundleError:
        return False


def load_model(
    model: str | Path | None,
    manifest_path: str | Path | None = None,
    *,
    cache_dir: str | Path | None = None,
    trusted_list: str | Path | None = None,
) -> tuple[Bundle, Provenance]:
    """Open a model for use: a manifest name (or None: the default) verified against the manifest's
    sha256, or a bundle path with its :func:`bundle_provenance`. Returns the bundle and its provenance."""
    path, expected = resolve_model(None if model is None else str(model), manifest_path, cache_dir=cache_dir)
    if expected is not None:
        bundle = load_bundle(path, expected_sha256=expected)
        return bundle, Provenance(VERIFIED, expected.lower(), f"{bundle.name} from the models manifest, sha256 verified")
    provenance = bundle_provenance(path, manifest_path, trusted_list)
    return load_bundle(path), provenance
