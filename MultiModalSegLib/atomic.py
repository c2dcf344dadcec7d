"""Atomic file writes: a temporary file beside the target, renamed onto it only when complete."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def file_suffix(path: Path) -> str:
    """The suffix a writer needs to pick the format (``.seg.nrrd``, ``.nii.gz``, ``.png``...)."""
    name = path.name.lower()
    if name.endswith(".seg.nrrd"):
        return ".seg.nrrd"
    return "".join(path.suffixes[-2:]) if name.endswith(".gz") else path.suffix


def _default_mode() -> int:
    """Permissions of a new file under the current umask (0644 under the usual 022)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder; when the block succeeds it replaces ``path``,
    when it fails it is removed. A crash never leaves half a file under the final name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    os.chmod(tmp, _default_mode())  # mkstemp makes 0600; the result gets what any new file gets
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8", newline="")
    return Path(path)
