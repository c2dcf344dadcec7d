"""The report of ``.ci/oldest-python``: which commit, interpreter and packages ran the tests, and pytest's summary.

Run by that script inside the Python 3.12 environment, after the tests; nothing in it is typed by hand.
"""

from __future__ import annotations

import argparse
import platform
import re
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

PACKAGES = ("torch", "monai", "numpy", "scipy", "SimpleITK", "nibabel", "jsonschema", "vtk", "slicer-core",
            "PySide6-Essentials", "pytest")


def summary_line(log: str) -> str:
    """pytest's last summary line (``N passed, M deselected in S``), without its ``=`` rule."""
    lines = [line.strip("= ").strip() for line in log.splitlines() if re.search(r"\b(passed|failed|error)", line)]
    return lines[-1] if lines else "no pytest summary in the log"


def failures(log: str) -> list[str]:
    return [line.strip() for line in log.splitlines() if line.startswith(("FAILED ", "ERROR "))]


def version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def report(log: str, status: int, seconds: int, commit: str) -> str:
    """``commit``: what the tests ran on, as the script read it before they started."""
    lines = [
        "# Tests under the oldest supported Python",
        "",
        "Written by `bash .ci/oldest-python` from its own run: every test not marked slow, under the",
        "Python of 3D Slicer 5.10, the oldest Slicer the module supports.",
        "",
        f"- finished: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; tested commit {commit}",
        f"- interpreter: Python {platform.python_version()} ({sys.implementation.name}, {platform.machine()})",
        f"- packages: {', '.join(f'{p} {version(p)}' for p in PACKAGES)}",
        f"- pytest exit status {status} after {seconds // 60} min {seconds % 60} s: **{summary_line(log)}**",
    ]
    failed = failures(log)
    if failed:
        lines += ["", "Failed:", "", *[f"- `{f}`" for f in failed]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--status", type=int, required=True)
    parser.add_argument("--seconds", type=int, required=True)
    parser.add_argument("--commit", required=True, help="the commit tested, read before the tests started")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report(args.log.read_text(errors="replace"), args.status, args.seconds, args.commit))
    print(f"report: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
