"""Progress reporting: a JSON-lines log another process can follow, and a terminal bar."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TextIO


class ProgressLog:
    """Appends one JSON object per line to ``path`` and flushes, so readers see every event at once.

    Events: ``start``, ``step`` (losses, lr, elapsed and ETA seconds), ``validation`` (Dice per
    modality per class), ``checkpoint``, ``stopped``, ``done``.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("a", encoding="utf-8")

    def write(self, event: str, **fields) -> dict:
        record = {"event": event, "time": round(time.time(), 3), **fields}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        return record

    def close(self) -> None:
        self._file.close()


def read_progress(path: Path) -> list[dict]:
    """All complete records of a progress log (a partially written last line is ignored)."""
    out = []
    if not path.exists():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


class ProgressBar:
    """A one-line text bar on a terminal; plain lines (every ``every`` steps) when not a terminal."""

    def __init__(self, total: int, stream: TextIO | None = None, every: int = 10) -> None:
        self.total = total
        self.stream = stream or sys.stderr
        self.every = every
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    def update(self, step: int, text: str) -> None:
        if self.tty:
            done = int(30 * step / max(self.total, 1))
            self.stream.write(f"\r[{'#' * done}{'.' * (30 - done)}] {step}/{self.total} {text}   ")
        elif step % self.every == 0 or step == self.total:
            self.stream.write(f"step {step}/{self.total} {text}\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def format_seconds(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"
