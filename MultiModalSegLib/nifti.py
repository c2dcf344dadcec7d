"""Checks of a NIfTI file's header against its contents, done before SimpleITK reads it.

SimpleITK fills the missing part of a truncated NIfTI with zeros and turns a voxel spacing of 0
into 1 mm, both without a word; these checks refuse such files with one sentence instead.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

from .errors import InputError

_CHUNK = 1 << 20


def _header(path: Path):
    """The header as stored (nibabel's ``load`` would silently change a spacing of 0 into 1)."""
    import nibabel

    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read(540)
        for cls in (nibabel.Nifti1Header, nibabel.Nifti2Header):
            size = cls.template_dtype.itemsize
            if len(raw) >= size and size in (int.from_bytes(raw[:4], "little"), int.from_bytes(raw[:4], "big")):
                return cls(raw[:size], check=False)
        raise ValueError("no NIfTI-1 or NIfTI-2 header size")
    except Exception as exc:  # a damaged header or compressed stream: many kinds
        raise InputError(
            f"{path}: not a readable image (NIfTI header: {exc}); give a NIfTI, NRRD, MHA file or a DICOM folder."
        ) from exc


def _stored_bytes(path: Path) -> int:
    """Bytes of the (uncompressed) file; a damaged or truncated gzip stream raises InputError."""
    if not path.name.lower().endswith(".gz"):
        return path.stat().st_size
    total = 0
    try:
        with gzip.open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                total += len(chunk)
    except (EOFError, zlib.error, gzip.BadGzipFile, OSError) as exc:
        raise InputError(
            f"{path}: the compressed file is truncated or damaged ({exc}); copy or export the scan again."
        ) from exc
    return total


def check_nifti_file(path: str | Path) -> None:
    """Refuse a NIfTI file shorter than its header declares, or whose voxel spacing is 0 or not finite."""
    path = Path(path)
    header = _header(path)
    shape = header.get_data_shape()
    expected = int(header.get_data_offset()) + math.prod(shape) * header.get_data_dtype().itemsize
    actual = _stored_bytes(path)
    if actual < expected:
        raise InputError(
            f"{path}: holds {actual} bytes but its header declares {expected} (a truncated or half-copied "
            "file); copy or export the scan again."
        )
    zooms = [float(z) for z in header.get_zooms()[: min(len(shape), 3)]]
    if any(not math.isfinite(z) or z == 0 for z in zooms):
        raise InputError(
            f"{path}: the header gives voxel spacing {tuple(zooms)} mm (pixdim 0 or not finite), so the scan's "
            "size is unknown; write the true spacing into the header and try again."
        )
