"""Model bundles: a folder (or a ``.zip`` of its files) holding ``metadata.json`` and ``model.pt``.

Nothing in a bundle is executed: the weights are a plain PyTorch state dict loaded with
``weights_only=True``, and they are loaded only after their sha256 matches the metadata.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import shutil
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import jsonschema
import torch

from .atomic import atomic_path, publish_mode, write_error
from .errors import BundleError, OutputError
from .labels import LabelInfo
from .resources import schema_validator

CURRENT_FORMAT_VERSION = 1
METADATA_NAME = "metadata.json"
WEIGHTS_NAME = "model.pt"
_CHUNK = 1 << 20


@dataclass
class Bundle:
    """A loaded model bundle: where it came from, its metadata and its weights (on the CPU)."""

    path: Path
    metadata: dict
    state_dict: dict[str, torch.Tensor]

    @property
    def labels(self) -> list[LabelInfo]:
        return [LabelInfo.from_dict(d) for d in self.metadata["labels"]]

    @property
    def modalities(self) -> list[str]:
        return list(self.metadata["modalities"])

    @property
    def name(self) -> str:
        return self.metadata["name"]

    @property
    def method(self) -> str:
        return self.metadata["method"]


# ----------------------------------------------------------------------------- hashing


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _update_from_file(digest: hashlib._Hash, path: Path) -> None:
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)


def file_sha256(path: str | Path) -> str:
    """sha256 (hex) of a file's bytes."""
    digest = hashlib.sha256()
    _update_from_file(digest, Path(path))
    return digest.hexdigest()


def folder_sha256(path: str | Path) -> str:
    """sha256 (hex) over a folder's files: each relative POSIX path, its size and its bytes, in sorted order."""
    root = Path(path)
    digest = hashlib.sha256()
    files = sorted((p for p in root.rglob("*") if p.is_file()), key=lambda p: p.relative_to(root).as_posix())
    for file in files:
        rel = file.relative_to(root).as_posix().encode("utf-8")
        digest.update(rel + b"\0" + str(file.stat().st_size).encode() + b"\0")
        _update_from_file(digest, file)
    return digest.hexdigest()


def bundle_sha256(path: str | Path) -> str:
    """sha256 of a bundle: :func:`file_sha256` of a zip, :func:`folder_sha256` of a folder."""
    path = Path(path)
    if path.is_file():
        return file_sha256(path)
    if path.is_dir():
        return folder_sha256(path)
    raise BundleError(f"Model bundle {path} does not exist; check the path.")


# ----------------------------------------------------------------------------- validation


def _validator() -> jsonschema.protocols.Validator:
    return schema_validator("bundle_metadata")


def _field_path(error: jsonschema.ValidationError) -> str:
    parts = ""
    for p in error.absolute_path:
        parts += f"[{p}]" if isinstance(p, int) else (f".{p}" if parts else str(p))
    return parts or "(top level)"


def validate_metadata(metadata: dict, source: str | Path = METADATA_NAME) -> None:
    """Check metadata against the bundle schema; raise :class:`BundleError` naming the field and the problem."""
    error = jsonschema.exceptions.best_match(_validator().iter_errors(metadata))
    if error is None:
        return
    if error.validator == "required":
        missing = next((f for f in error.validator_value if f not in error.instance), "?")
        parent = _field_path(error)
        field = missing if parent == "(top level)" else f"{parent}.{missing}"
        raise BundleError(f"{source}: required field '{field}' is missing; add it to match the bundle schema.")
    raise BundleError(
        f"{source}: field '{_field_path(error)}' is invalid ({error.message}); fix it to match the bundle schema."
    )


def _check_format_version(metadata: dict, source: str | Path) -> None:
    version = metadata.get("format_version") if isinstance(metadata, dict) else None
    if isinstance(version, int) and not isinstance(version, bool) and version > CURRENT_FORMAT_VERSION:
        raise BundleError(
            f"{source} was made by a newer MultiModalSeg (format {version}); upgrade MultiModalSeg to load it."
        )


def check_consistency(metadata: dict, source: str | Path = METADATA_NAME) -> None:
    """Labels must be 1..K with unique names; ``network.params.out_channels``, when given, must be K+1."""
    values = [int(d["value"]) for d in metadata["labels"]]
    k = len(values)
    if sorted(values) != list(range(1, k + 1)):
        raise BundleError(
            f"{source}: label values {values} must be unique and exactly 1..{k}; renumber the labels."
        )
    names = [d["name"] for d in metadata["labels"]]
    if len(set(names)) != len(names):
        raise BundleError(f"{source}: label names {names} must be unique; rename the duplicates.")
    out_channels = metadata["network"].get("params", {}).get("out_channels")
    if out_channels is not None and out_channels != k + 1:
        raise BundleError(
            f"{source}: network.params.out_channels is {out_channels} but the bundle has {k} labels "
            f"(expected {k + 1} with background); the bundle's labels disagree with its metadata."
        )


MEMBERS_PREFIX = "members"


def member_state(state_dict: dict[str, torch.Tensor], index: int) -> dict[str, torch.Tensor]:
    """Member ``index``'s weights in an ensemble's state dict (its ``members.<index>.`` keys, without the prefix)."""
    prefix = f"{MEMBERS_PREFIX}.{index}."
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


def check_members(metadata: dict, state_dict: dict[str, torch.Tensor], path: str | Path) -> None:
    """An ensemble bundle (``members`` in its metadata, :mod:`.bundle_members`): its weights must be exactly the
    members' (``members.<i>.`` for each listed member, nothing else), each matching the sha256 its record gives."""
    members = metadata.get("members")
    if not members:
        return
    for i, record in enumerate(members):
        own = member_state(state_dict, i)
        if not own or weights_sha256(own) != record["model_sha256"]:
            raise BundleError(
                f"Model bundle {path}: member {i + 1} ({record['name']} {record['version']}) "
                f"{'has no weights' if not own else 'does not match the sha256 its record gives'}; the ensemble is "
                "inconsistent and was not loaded, rebuild it with training/ensemble_bundle.py."
            )
    listed = tuple(f"{MEMBERS_PREFIX}.{i}." for i in range(len(members)))
    extra = [k for k in state_dict if not k.startswith(listed)]
    if extra:
        raise BundleError(f"Model bundle {path}: weights {extra[0]!r} and {len(extra) - 1} more belong to no listed member; "
                          "the ensemble is inconsistent and was not loaded, rebuild it with training/ensemble_bundle.py.")


def check_output_channels(bundle: Bundle, n_channels: int) -> None:
    """Raise :class:`BundleError` if a network built from ``bundle`` outputs other than labels+1 classes."""
    expected = len(bundle.metadata["labels"]) + 1
    if int(n_channels) != expected:
        raise BundleError(
            f"Model bundle {bundle.path}: the network outputs {n_channels} classes but the bundle lists "
            f"{expected - 1} labels (expected {expected} with background); the bundle is inconsistent, rebuild it."
        )


# ----------------------------------------------------------------------------- saving


def weights_sha256(state_dict: dict) -> str:
    """The ``model_sha256`` that ``state_dict`` gets when saved in a bundle (its serialisation is deterministic)."""
    return _sha256_bytes(_serialize_state_dict(state_dict))


def _serialize_state_dict(state_dict: dict) -> bytes:
    if not isinstance(state_dict, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state_dict.items()
    ):
        raise BundleError("state_dict must map parameter names (str) to tensors; pass model.state_dict().")
    # in the default layout: a network trained channels-last (device.cpu_channels_last) gives the same bytes,
    # and so the same sha256, as the same weights in the default layout
    cpu = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    buf = io.BytesIO()
    torch.save(cpu, buf)
    return buf.getvalue()


def _check_extra_name(name: str) -> str:
    rel = PurePosixPath(name)
    if not name or rel.is_absolute() or ".." in rel.parts or "\\" in name or str(rel) in (METADATA_NAME, WEIGHTS_NAME):
        raise BundleError(
            f"Extra bundle file name '{name}' is not allowed; use a relative name other than "
            f"{METADATA_NAME} or {WEIGHTS_NAME}, without '..'."
        )
    return str(rel)


def _bundle_files(metadata: dict, weights: bytes, extra_files: dict[str, str | Path] | None) -> dict[str, Path | bytes]:
    files: dict[str, Path | bytes] = {
        METADATA_NAME: (json.dumps(metadata, indent=2, sort_keys=False) + "\n").encode("utf-8"),
        WEIGHTS_NAME: weights,
    }
    for name, src in (extra_files or {}).items():
        src = Path(src)
        if not src.is_file():
            raise BundleError(f"Extra bundle file {src} (for '{name}') does not exist; check the path.")
        files[_check_extra_name(name)] = src
    return files


def _write_folder(folder: Path, files: dict[str, Path | bytes]) -> None:
    for name, content in files.items():
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            shutil.copyfile(content, target)


def _write_zip(target: Path, files: dict[str, Path | bytes]) -> None:
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, content in files.items():
            if isinstance(content, bytes):
                zf.writestr(name, content)
            else:
                zf.write(content, arcname=name)


def _is_replaceable(out: Path) -> bool:
    if out.is_file():
        return zipfile.is_zipfile(out)
    return out.is_dir() and ((out / METADATA_NAME).is_file() or not any(out.iterdir()))


def _check_target(out: Path, overwrite: bool) -> None:
    if not (out.exists() or out.is_symlink()):
        return
    if not overwrite:
        raise BundleError(
            f"Model bundle {out} already exists; choose another path or pass --overwrite (overwrite=True) to replace it."
        )
    if not _is_replaceable(out):
        raise BundleError(f"{out} exists and is not a model bundle; refusing to replace it, choose another path.")


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _replace(tmp: Path, out: Path) -> None:
    """Move ``tmp`` onto ``out``; an existing folder is moved aside first and removed after."""
    if out.is_dir() and not out.is_symlink():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
        os.replace(out, old / out.name)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
        return
    if tmp.is_dir() and (out.exists() or out.is_symlink()):
        out.unlink()  # a zip replaced by a folder: a folder cannot be renamed onto a file
    os.replace(tmp, out)


def save_bundle(
    out: str | Path,
    metadata: dict,
    state_dict: dict,
    *,
    extra_files: dict[str, str | Path] | None = None,
    as_zip: bool | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a bundle folder (or zip) atomically and return its path.

    Fills ``model_sha256`` and ``format_version``, validates the metadata, then builds the bundle
    beside ``out`` and renames it into place. ``as_zip=None`` writes a zip iff ``out`` ends with
    ``.zip``. ``extra_files`` maps names inside the bundle to files to copy (e.g. ``report.md``).
    """
    out = Path(out)
    as_zip = out.suffix.lower() == ".zip" if as_zip is None else as_zip
    weights = _serialize_state_dict(state_dict)
    metadata = copy.deepcopy(metadata)
    metadata["format_version"] = CURRENT_FORMAT_VERSION
    metadata["model_sha256"] = _sha256_bytes(weights)
    validate_metadata(metadata, source=f"Metadata for {out}")
    check_consistency(metadata, source=f"Metadata for {out}")
    files = _bundle_files(metadata, weights, extra_files)
    _check_target(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    if as_zip:
        fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
        os.close(fd)
        tmp = Path(name)
        writer = _write_zip
    else:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
        writer = _write_folder
    try:
        writer(tmp, files)
        _verify_bundle(tmp, files, out)
        publish_mode(tmp)
        _replace(tmp, out)
    except OSError as exc:
        _remove(tmp)
        raise write_error(out, exc) from exc
    except BaseException:
        _remove(tmp)
        raise
    return out


def _verify_bundle(tmp: Path, files: dict[str, Path | bytes], out: Path) -> None:
    """Read the written bundle back and compare each member with what was meant (a full disk shows here)."""
    for f in [tmp] if tmp.is_file() else [p for p in tmp.rglob("*") if p.is_file()]:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    try:
        if tmp.is_file():
            with zipfile.ZipFile(tmp) as zf:
                written = {name: zf.read(name) for name in files}
        else:
            written = {name: (tmp / name).read_bytes() for name in files}
    except (zipfile.BadZipFile, zlib.error, EOFError, KeyError, OSError) as exc:
        raise OutputError(f"Model bundle {out}: could not be written completely ({exc}); free disk space and try again.") from exc
    for name, content in files.items():
        expected = content if isinstance(content, bytes) else Path(content).read_bytes()
        if written[name] != expected:
            raise OutputError(f"Model bundle {out}: {name} differs from what was written; check the disk and try again.")


# ----------------------------------------------------------------------------- loading


def _check_entry_name(zip_path: Path, name: str) -> None:
    rel = PurePosixPath(name.replace("\\", "/"))
    if rel.is_absolute() or ".." in rel.parts or (rel.parts and ":" in rel.parts[0]):
        raise BundleError(
            f"Model bundle {zip_path}: entry '{name}' is absolute or escapes the bundle folder (zip-slip); "
            "refusing to open it, rebuild the zip from the bundle folder."
        )


def _zip_prefix(names: list[str]) -> str:
    """'' if metadata.json is at the zip root, else 'FOLDER/' when the zip holds one bundle folder."""
    if METADATA_NAME in names:
        return ""
    nested = [n for n in names if n.count("/") == 1 and n.endswith("/" + METADATA_NAME)]
    return nested[0][: -len(METADATA_NAME)] if len(nested) == 1 else ""


def _read_zip_members(path: Path) -> tuple[bytes | None, bytes | None]:
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            for name in names:
                _check_entry_name(path, name)
            prefix = _zip_prefix(names)

            def read(member: str) -> bytes | None:
                return zf.read(prefix + member) if prefix + member in names else None

            return read(METADATA_NAME), read(WEIGHTS_NAME)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise BundleError(
            f"Model bundle {path} is not a readable zip (damaged: {exc}); download or rebuild it."
        ) from exc


def _read_folder_members(path: Path) -> tuple[bytes | None, bytes | None]:
    def read(member: str) -> bytes | None:
        file = path / member
        return file.read_bytes() if file.is_file() else None

    return read(METADATA_NAME), read(WEIGHTS_NAME)


def _parse_metadata(raw: bytes | None, path: Path) -> dict:
    if raw is None:
        raise BundleError(f"Model bundle {path} has no {METADATA_NAME}; it is not a MultiModalSeg bundle.")
    try:
        metadata = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path}/{METADATA_NAME} is not valid JSON ({exc}); fix or rebuild the bundle.") from exc
    source = f"{path}/{METADATA_NAME}"
    _check_format_version(metadata, source)
    validate_metadata(metadata, source)
    return metadata


def _load_weights(raw: bytes | None, metadata: dict, path: Path) -> dict[str, torch.Tensor]:
    if raw is None:
        raise BundleError(f"Model bundle {path} has no {WEIGHTS_NAME}; the weights are missing, rebuild the bundle.")
    if _sha256_bytes(raw) != metadata["model_sha256"]:
        raise BundleError(
            f"Model bundle {path}: {WEIGHTS_NAME} does not match model_sha256 in its metadata; the weights were "
            "altered or corrupted and were not loaded, download or rebuild the bundle."
        )
    try:
        state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as exc:  # any unpickling failure means an unusable file
        raise BundleError(f"Model bundle {path}: {WEIGHTS_NAME} is not a loadable state dict ({exc}).") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BundleError(f"Model bundle {path}: {WEIGHTS_NAME} is not a state dict of tensors; rebuild the bundle.")
    return dict(state)


def load_bundle(path: str | Path, *, expected_sha256: str | None = None) -> Bundle:
    """Load a bundle folder or zip, verifying hashes before anything is parsed or unpickled.

    ``expected_sha256`` (from the models manifest) is compared with :func:`bundle_sha256` first;
    then the metadata is validated, the weights' sha256 checked, and the weights loaded.
    """
    path = Path(path)
    if not path.exists():
        raise BundleError(f"Model bundle {path} does not exist; check the path or the models manifest.")
    if expected_sha256 is not None:
        actual = bundle_sha256(path)
        if actual.lower() != expected_sha256.lower():
            raise BundleError(
                f"Model bundle {path} has sha256 {actual} but the models manifest expects {expected_sha256}; "
                "it was altered or is incomplete and was not loaded, download it again."
            )
    meta_raw, weights_raw = _read_zip_members(path) if path.is_file() else _read_folder_members(path)
    metadata = _parse_metadata(meta_raw, path)
    state_dict = _load_weights(weights_raw, metadata, path)
    check_consistency(metadata, source=f"{path}/{METADATA_NAME}")
    check_members(metadata, state_dict, path)
    # the network's classes are the labels plus background, whether or not the metadata says so:
    # a network built with another default would give labels that its weights cannot produce
    metadata["network"].setdefault("params", {}).setdefault("out_channels", len(metadata["labels"]) + 1)
    return Bundle(path=path, metadata=metadata, state_dict=state_dict)


def replace_metadata(path: str | Path, metadata: dict) -> Path:
    """Replace a bundle's ``metadata.json`` and nothing else, in place and atomically.

    Every other member (the weights, a report) keeps its bytes; in a zip every member keeps its
    name, order, timestamp and compression, so the same change to the same bundle gives the same
    file. ``model_sha256`` must stay that of the weights; the metadata is validated first.
    """
    path = Path(path)
    bundle = load_bundle(path)  # the weights match the old metadata's sha256
    if metadata.get("model_sha256") != bundle.metadata.get("model_sha256"):
        raise BundleError(f"{path}: the new metadata's model_sha256 differs from the weights'; keep it unchanged.")
    validate_metadata(metadata, source=f"Metadata for {path}")
    check_consistency(metadata, source=f"Metadata for {path}")
    text = (json.dumps(metadata, indent=2, sort_keys=False) + "\n").encode("utf-8")
    if path.is_dir():
        with atomic_path(path / METADATA_NAME, suffix=".meta") as tmp:
            tmp.write_bytes(text)
        return path
    with zipfile.ZipFile(path) as src, atomic_path(path, suffix=".meta") as tmp:
        with zipfile.ZipFile(tmp, "w") as dst:
            for info in src.infolist():
                data = text if PurePosixPath(info.filename).name == METADATA_NAME and info.filename.count("/") <= 1 else src.read(info)
                member = zipfile.ZipInfo(info.filename, date_time=info.date_time)
                member.compress_type, member.external_attr = info.compress_type, info.external_attr
                dst.writestr(member, data)
    return path


def weights_intact(path: str | Path) -> bool:
    """True when a bundle's ``model.pt`` matches the ``model_sha256`` of its own metadata (nothing is unpickled):
    a bundle that is intact but not the one expected is another model, not a damaged copy."""
    path = Path(path)
    try:
        meta_raw, weights_raw = _read_zip_members(path) if path.is_file() else _read_folder_members(path)
        metadata = json.loads((meta_raw or b"").decode("utf-8"))
    except (BundleError, ValueError, OSError):
        return False
    return weights_raw is not None and isinstance(metadata, dict) and _sha256_bytes(weights_raw) == metadata.get("model_sha256")
