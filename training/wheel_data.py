"""Real scans that the project measures on and does not hold, read from a wheel on PyPI where it lies.

A wheel is checked against the sha256 of the exact file the project's reports were measured on
before anything in it is read: another version, a truncated download or an altered file would
otherwise give other scans or other reference figures under the same name.
"""

from __future__ import annotations

from pathlib import Path

from MultiModalSegLib.bundle import file_sha256
from MultiModalSegLib.errors import InputError


def check_wheel(wheel: Path, sha256: str, requirement: str) -> None:
    """Raise :class:`InputError` naming ``wheel`` and the fix unless it is the file whose sha256 is
    ``sha256`` (``requirement``, e.g. ``renalsegmentor==2.0.0``, says how to fetch it)."""
    fetch = f"fetch it with `pip download --no-deps {requirement}`"
    if not Path(wheel).is_file():
        raise InputError(f"{wheel}: no such file; {fetch}.")
    found = file_sha256(wheel)
    if found != sha256:
        raise InputError(f"{wheel}: sha256 {found} is not that of the {requirement} wheel the reports were "
                         f"measured on ({sha256}): another version or an altered or cut-short file; {fetch}.")
