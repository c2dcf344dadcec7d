"""Atomic file writes: a temporary file beside the target, renamed onto it only when complete.

This is the one writer path of the library: the temporary file is flushed to disk (``fsync``),
optionally checked by the caller, given the permissions the user's umask asks for, and only then
renamed onto the target. Any operating-system failure (full disk, read-only folder, a file in the
way) becomes an :class:`~MultiModalSegLib.errors.OutputError` naming the target and the fix; the
target is never left half-written and an existing one is untouched when the write fails.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import OutputError

_NO_SPACE = (errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC))
_NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)


def file_suffix(path: Path) -> str:
    """The suffix a writer needs to pick the format (``.seg.nrrd``, ``.nii.gz``, ``.png``...)."""
    name = path.name.lower()
    if name.endswith(".seg.nrrd"):
        return ".seg.nrrd"
    return "".join(path.suffixes[-2:]) if name.endswith(".gz") else path.suffix


def write_error(path: str | Path, exc: OSError) -> OutputError:
    """One sentence for a failed write of ``path``: what happened and what to do."""
    reason = exc.strerror or str(exc) or exc.__class__.__name__
    if exc.errno in _NO_SPACE:
        fix = "the disk is full: free space or choose another output folder; nothing was replaced"
    elif exc.errno in _NOT_WRITABLE:
        fix = "the folder is not writable: choose another output folder or fix its permissions"
    elif exc.errno in (errno.ENOTDIR, errno.EEXIST, errno.EISDIR):
        fix = "a file or folder is in the way: choose another output path"
    else:
        fix = "check the output folder and try again"
    return OutputError(f"{path}: could not be written ({reason}); {fix}.")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish_mode(path: Path) -> None:
    """Give a finished temporary file (or folder) the mode a plain ``open`` would have given it."""
    base = 0o777 if path.is_dir() else 0o666
    os.chmod(path, base & ~_umask())


def _fsync(path: Path) -> None:
    if path.is_file():
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def check_output_folder(folder: str | Path, what: str = "--output") -> Path:
    """Refuse, before any work, an output folder that is a file or that cannot be written.

    A folder that does not exist yet is fine when its nearest existing parent is writable; it is
    not created here (nothing is created until the first output is written).
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{what} {folder}: is an existing file, not a folder; give a folder path.")
    probe_dir = folder
    while not probe_dir.exists():
        if probe_dir.parent == probe_dir:
            break
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise OutputError(f"{what} {folder}: {probe_dir} is a file, not a folder; give another output path.")
    try:
        fd, name = tempfile.mkstemp(prefix=".mmseg-write-test.", dir=probe_dir)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise OutputError(
            f"{what} {folder}: {probe_dir} is not writable ({exc.strerror or exc}); "
            "choose another output folder or fix its permissions."
        ) from exc
    return folder


@contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder; when the block succeeds it is synced to disk
    and replaces ``path``, when it fails it is removed. A crash or a full disk never leaves half a
    file under the final name; an operating-system error becomes an ``OutputError``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise write_error(path, exc) from exc
    tmp = Path(name)
    try:
        yield tmp
        _fsync(tmp)
        publish_mode(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise write_error(path, exc) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) atomically and check that the bytes on disk are the ones written."""
    data = text.encode("utf-8")
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
        if tmp.read_bytes() != data:
            raise OutputError(f"{path}: the file read back differs from what was written; check the disk.")
    return Path(path)
