"""What a long command tells its user while it works: the plan, progress bars and the result.

A :class:`Reporter` speaks one of two ways. For a person (the default): the plan and notes as text
on stderr, a bar per task on stderr (redrawn in place on a terminal, a line every tenth otherwise),
the result as text on stdout. For a program (``json_lines=True``, the commands' ``--progress``):
stdout holds JSON lines only, one object per line with an ``event`` (``plan``, ``note``,
``progress`` with ``task``, ``done`` and ``total``, ``result``); the human text still goes to
stderr. Nothing here imports more than the standard library, so a command can report before its
heavy imports.
"""

from __future__ import annotations

import json
import sys
import time
from typing import TextIO

_JSON_INTERVAL_S = 0.2  # at most 5 progress lines a second per task in JSON mode (the last one always)
_BAR_WIDTH = 30


def _stream_is_terminal(stream: TextIO) -> bool:
    return bool(getattr(stream, "isatty", None)) and stream.isatty()


class Bar:
    """Progress of one task of ``total`` units; see :class:`Reporter`."""

    def __init__(self, reporter: Reporter, total: int, task: str, every: int | None = None, start: int = 0) -> None:
        self.reporter, self.total, self.task = reporter, max(int(total), 0), task
        self.every = every or max(1, self.total // 10)
        self.done = start
        self._last_json = 0.0
        self._drawn = False

    def update(self, done: int, text: str = "", **fields) -> None:
        """``done`` units of ``total`` finished; ``text`` follows the bar, ``fields`` go into the JSON line."""
        self.done = done
        r = self.reporter
        if r.json_lines:
            now = time.monotonic()
            if done >= self.total or now - self._last_json >= _JSON_INTERVAL_S:
                self._last_json = now
                r.emit("progress", task=self.task, done=done, total=self.total, **fields)
            return
        if r.quiet:
            return
        if r.terminal:
            filled = int(_BAR_WIDTH * done / max(self.total, 1))
            line = f"\r{self.task} [{'#' * filled}{'.' * (_BAR_WIDTH - filled)}] {done}/{self.total} {text}"
            r.err.write(line.rstrip() + "   ")
            self._drawn = True
        elif done % self.every == 0 or done == self.total:
            r.err.write(f"{self.task}: {done}/{self.total} {text}".rstrip() + "\n")
        r.err.flush()

    def close(self) -> None:
        if self._drawn:
            self.reporter.err.write("\n")
            self.reporter.err.flush()
            self._drawn = False


class Reporter:
    """The plan, progress and result of a command, for a person or for a program (see the module doc)."""

    def __init__(self, json_lines: bool = False, quiet: bool = False, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.json_lines = json_lines
        self.quiet = quiet
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.terminal = _stream_is_terminal(self.err)

    @classmethod
    def silent(cls) -> Reporter:
        """A reporter that writes nothing (e.g. the other ranks of a torchrun job)."""
        return cls(quiet=True, out=_Null(), err=_Null())

    def emit(self, event: str, **fields) -> None:
        """One JSON line on stdout (JSON mode only)."""
        if self.json_lines:
            self.out.write(json.dumps({"event": event, **fields}, default=str) + "\n")
            self.out.flush()

    def say(self, text: str) -> None:
        """A line of text for the person on stderr."""
        self.err.write(text.rstrip("\n") + "\n")
        self.err.flush()

    def plan(self, text: str, **fields) -> None:
        """What is about to happen, before long work: text on stderr (not when quiet), a ``plan`` event in JSON mode."""
        if not self.quiet:
            self.say(text)
        self.emit("plan", text=text, **fields)

    def note(self, text: str, **fields) -> None:
        """Something the person should know (a warning, a replaced default): text on stderr, a ``note`` event."""
        self.say(text)
        self.emit("note", text=text, **fields)

    def each(self, items: list, task: str, work):
        """``[work(item) for item in items]`` with a bar for ``task``."""
        bar = self.bar(len(items), task)
        out = []
        for i, item in enumerate(items, 1):
            out.append(work(item))
            bar.update(i)
        bar.close()
        return out

    def bar(self, total: int, task: str, every: int | None = None, start: int = 0) -> Bar:
        """A bar for ``task``; in plain text mode a line every ``every`` units (default a tenth)."""
        return Bar(self, total, task, every, start)

    def result(self, text: str, **fields) -> None:
        """The outcome: text on stdout for a person; in JSON mode a ``result`` event on stdout, the text on stderr."""
        if self.json_lines:
            self.say(text)
            self.emit("result", **fields)
        else:
            self.out.write(text.rstrip("\n") + "\n")
            self.out.flush()


class _Null:
    def write(self, _s: str) -> None:
        pass

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False
