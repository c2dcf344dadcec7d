"""Library commands run in a subprocess with Slicer's Python, followed without blocking.

Every subprocess the module starts (segment, download, train, pip) goes through :func:`popen_kwargs`:
its own process group, no console window on Windows, output decoded as UTF-8 with undecodable
bytes replaced (a stray byte never kills the reader thread).
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

ProgressCallback = Callable[[float, str], None]

MODULE_DIR = Path(__file__).resolve().parents[1]  # the module folder (this package is inside it)
GRACE_SECONDS = 10.0  # a cancelled run gets this long to write its checkpoint before it is killed


class SegmentationError(Exception):
    """A run that could not be done; the message is one sentence for the user."""


def library_parent() -> Path:
    """Folder holding ``MultiModalSegLib``: beside the module when installed, the repository root
    in a source tree."""
    for folder in (MODULE_DIR, MODULE_DIR.parent):
        if (folder / "MultiModalSegLib" / "__init__.py").is_file():
            return folder
    raise SegmentationError(
        f"MultiModalSegLib was not found beside {MODULE_DIR}; reinstall the MultiModalSeg extension."
    )


def ensure_library_importable() -> None:
    parent = str(library_parent())
    if parent not in sys.path:
        sys.path.insert(0, parent)


def slicer_python() -> str:
    """Slicer's Python interpreter (``PythonSlicer`` inside Slicer, else this interpreter)."""
    import slicer

    if hasattr(slicer, "app"):
        found = shutil.which("PythonSlicer")
        if found:
            return found
    return sys.executable


def popen_kwargs(platform: str | None = None) -> dict:
    """Keyword arguments of ``subprocess.Popen`` / ``run`` for a child of the module on ``platform``
    (``os.name``): a new process group (so a cancel reaches its children) and, on Windows, no
    console window."""
    platform = platform or os.name
    kwargs: dict = {"encoding": "utf-8", "errors": "replace"}
    if platform == "nt":
        kwargs["creationflags"] = 0x00000200 | 0x08000000  # CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW
    else:
        kwargs["start_new_session"] = True
    return kwargs


def kill_tree(proc: subprocess.Popen) -> None:
    """Stop the subprocess and every process it started (SIGTERM, then SIGKILL; ``taskkill /T`` on Windows)."""
    if proc.poll() is not None:
        return
    if os.name == "nt":
        subprocess.run(["taskkill", "/T", "/PID", str(proc.pid)], capture_output=True, **popen_kwargs())
        try:
            proc.wait(timeout=5)
            return
        except subprocess.TimeoutExpired:
            subprocess.run(["taskkill", "/F", "/T", "/PID", str(proc.pid)], capture_output=True, **popen_kwargs())
    else:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=5)
            return
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def _follow(stream, sink: queue.Queue, tag: str) -> None:
    for line in iter(stream.readline, ""):
        sink.put((tag, line.rstrip("\n")))
    stream.close()


_ERROR = re.compile(r"error: (.*)$")


def library_env() -> dict:
    """Environment of a library subprocess: the library importable, a sane thread count."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(library_parent()), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 2) - 1)))
    env.setdefault("PYTHONIOENCODING", "utf-8")
    return env


class ProcessJob:
    """A command run in a subprocess (own process group), followed without blocking.

    ``poll()`` reads its output (stdout lines go to ``_on_output``, stderr is kept) and, once the
    process has ended, calls ``_finish`` (which raises ``SegmentationError`` on failure).
    States: ``running`` -> ``done`` | ``failed`` | ``cancelled``. Subclasses set ``progress``.
    """

    state = "running"
    error: str | None = None

    def _launch(self, command: list[str], cwd: str | Path | None = None, env: dict | None = None) -> None:
        self.command = command
        self.stderr: list[str] = []
        self.started = time.monotonic()
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=env if env is not None else library_env(), cwd=str(cwd) if cwd else None,
                                     **popen_kwargs())
        self.lines: queue.Queue = queue.Queue()
        self.readers = [
            threading.Thread(target=_follow, args=(stream, self.lines, tag), daemon=True)
            for stream, tag in ((self.proc.stdout, "out"), (self.proc.stderr, "err"))
        ]
        for reader in self.readers:
            reader.start()

    def _drain(self) -> None:
        while True:
            try:
                tag, line = self.lines.get_nowait()
            except queue.Empty:
                return
            if tag == "err":
                self.stderr.append(line)
                self._on_error_output(line)
            else:
                self._on_output(line)

    def _on_output(self, line: str) -> None:
        pass

    def _on_error_output(self, line: str) -> None:
        pass

    def _finish(self) -> None:
        pass

    def _cleanup(self) -> None:
        pass

    def _end_state(self) -> str:
        """State of a run that ended without error (a subclass may tell a clean stop from done)."""
        return "done"

    def _last_error(self) -> str | None:
        """The library's one-sentence ``error: ...`` message, if it printed one."""
        for line in reversed(self.stderr):
            match = _ERROR.search(line)
            if match:
                return match.group(1).strip()
        return None

    def _exit_sentence(self, what: str) -> str:
        last = next((line for line in reversed(self.stderr) if line.strip()), "no message")
        return f"The {what} process stopped with exit code {self.proc.returncode} ({last.strip()}); see the Python console."

    def poll(self) -> bool:
        """Process new output; True once the job has ended (then ``state`` says how).

        Raises ``SegmentationError`` (once) when the run failed; any other error of the finishing
        step (a full disk, a read-only folder) becomes one too, so a job never stays "running".
        """
        if self.state != "running":
            return True
        self._drain()
        if self.proc.poll() is None:
            return False
        for reader in self.readers:
            reader.join(timeout=5)
        self._drain()
        try:
            self._finish()
        except SegmentationError as exc:
            self.state, self.error = "failed", str(exc)
            raise
        except Exception as exc:  # OSError and the like: one sentence, and the job ends
            self.state, self.error = "failed", f"{exc.__class__.__name__}: {exc}"
            raise SegmentationError(f"The run ended but its result could not be used ({exc}).") from exc
        finally:
            self._cleanup()
        self.state = self._end_state()
        if self.state == "done":
            self.progress(1.0, "done")
        return True

    def wait(self, poll_seconds: float = 0.1) -> None:
        while not self.poll():
            time.sleep(poll_seconds)

    def cancel(self) -> None:
        """Kill the process tree and remove the job's temporary files."""
        if self.state != "running":
            return
        kill_tree(self.proc)
        self.state = "cancelled"
        self._cleanup()
        self.progress(0.0, "cancelled")
