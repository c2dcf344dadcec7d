"""Fetch a model bundle over HTTP(S): resumable, verified, atomic, safe against concurrent fetches.

Standard library only (``urllib``). The steps, for a target ``dest`` in the models cache:

1. take ``dest.lock`` (created with ``O_CREAT | O_EXCL``; holds the owner's host, pid and a token;
   its modification time is refreshed while the download runs). A lock whose owner process is
   gone (same host), or that has not been refreshed for ``STALE_LOCK_SECONDS``, is stale and
   broken; any other lock is waited for, up to ``lock_timeout`` seconds;
2. if ``dest`` already exists with the expected sha256 (another process just fetched it), done;
3. bytes go to ``dest.part``; an existing ``.part`` is resumed with an HTTP ``Range`` request
   (a server that answers 200 instead of 206 restarts the file from byte 0). A connection cut
   in the middle of the body is retried ``retries`` times, each retry resuming;
4. the complete ``.part`` is checked (size, then sha256) before anything reads it as a bundle;
   on a mismatch it is deleted;
5. ``os.replace(dest.part, dest)``: an atomic rename in the same folder.

Errors are :class:`~MultiModalSegLib.errors.DownloadError` (a :class:`BundleError`): one message
naming the model, the URL and the fix (how to fetch the file by hand and ``mmseg models import`` it).
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import json
import os
import shutil
import socket
import ssl
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

from .errors import BundleError

ProgressCallback = Callable[[int, "int | None"], None]
"""Called as ``progress(bytes_done, bytes_total)`` (``bytes_total`` None when the size is unknown)."""

CHUNK = 1 << 16
TIMEOUT_SECONDS = 30.0
STALE_LOCK_SECONDS = 120.0
LOCK_REFRESH_SECONDS = 5.0
USER_AGENT = "MultiModalSeg-model-download/1"


class DownloadError(BundleError):
    """A model could not be downloaded (network, proxy, server, checksum or disk)."""


class DownloadCancelled(DownloadError):
    """The download was cancelled by the caller; the ``.part`` file is kept for a later resume."""


def _by_hand(model: str, url: str) -> str:
    return (
        f"download {url} by hand (browser, or another computer) and run `mmseg models import FILE`, "
        f"which makes '{model}' usable offline"
    )


# ----------------------------------------------------------------------------- lock


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if os.name == "nt":
        return True  # os.kill(pid, 0) would send CTRL_C_EVENT there: rely on the lock's age instead
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists but belongs to someone else, or the platform cannot tell: assume alive
    return True


def _read_lock(lock: Path) -> dict | None:
    try:
        return json.loads(lock.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _is_stale(lock: Path, info: dict | None, stale_after: float) -> bool:
    try:
        age = time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return False
    if age > stale_after:
        return True
    if info and info.get("host") == socket.gethostname() and isinstance(info.get("pid"), int):
        return not _pid_alive(info["pid"])
    return info is None and age > LOCK_REFRESH_SECONDS * 2  # unreadable and not refreshed: a crash mid-write


def _break_stale(lock: Path, info: dict | None) -> None:
    """Remove a stale lock, but only the one judged stale: it is renamed aside and its token compared."""
    aside = lock.with_name(f"{lock.name}.stale.{uuid.uuid4().hex}")
    try:
        os.replace(lock, aside)
    except FileNotFoundError:
        return
    moved = _read_lock(aside)
    if info is not None and moved is not None and moved.get("token") != info.get("token"):
        try:  # a fresh lock was taken meanwhile: put it back unless yet another one exists
            os.link(aside, lock)
        except OSError:
            pass
    aside.unlink(missing_ok=True)


class FileLock:
    """An exclusive lock file beside ``target`` (``target.lock``), safe across processes and hosts
    sharing a file system. ``touch()`` refreshes it so that waiters do not judge it stale."""

    def __init__(self, target: Path, *, timeout: float = 600.0, stale_after: float = STALE_LOCK_SECONDS) -> None:
        self.path = Path(f"{target}.lock")
        self.timeout = timeout
        self.stale_after = stale_after
        self.token = uuid.uuid4().hex
        self._last_touch = 0.0

    def acquire(self, on_wait: Callable[[], None] | None = None) -> None:
        deadline = time.monotonic() + self.timeout
        payload = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "token": self.token, "time": time.time()})
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DownloadError(
                f"The models cache folder {self.path.parent} cannot be created ({exc.strerror}); choose another "
                "folder with --cache or MMSEG_MODELS_CACHE."
            ) from exc
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                info = _read_lock(self.path)
                if _is_stale(self.path, info, self.stale_after):
                    _break_stale(self.path, info)
                    continue
                if time.monotonic() > deadline:
                    owner = f"process {info.get('pid')} on {info.get('host')}" if info else "another process"
                    raise DownloadError(
                        f"{self.path} is held by {owner} for more than {self.timeout:.0f} s; wait for that download "
                        f"to finish, or delete {self.path} if no download is running."
                    ) from None
                if on_wait is not None:
                    on_wait()
                time.sleep(0.1)
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(payload)
            self._last_touch = time.monotonic()
            return

    def touch(self) -> None:
        if time.monotonic() - self._last_touch >= LOCK_REFRESH_SECONDS:
            self._last_touch = time.monotonic()
            try:
                os.utime(self.path)
            except OSError:
                pass

    def release(self) -> None:
        info = _read_lock(self.path)
        if info is not None and info.get("token") == self.token:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


# ----------------------------------------------------------------------------- errors


def _network_error(exc: BaseException, model: str, url: str) -> DownloadError:
    """One sentence for a failed request: what happened, to which model and URL, and the fix."""
    by_hand = _by_hand(model, url)
    if isinstance(exc, urllib.error.HTTPError):
        if exc.code == 407:
            return DownloadError(
                f"Model '{model}': the proxy refused to fetch {url} (HTTP 407, proxy authentication required); "
                f"set https_proxy to include your proxy credentials (https://USER:PASSWORD@PROXY:PORT), or {by_hand}."
            )
        if exc.code in (403, 451) and "proxy" in str(exc.headers.get("Via", "") + exc.headers.get("Server", "")).lower():
            return DownloadError(
                f"Model '{model}': a proxy blocked {url} (HTTP {exc.code}); ask your IT department to allow it, "
                f"or {by_hand}."
            )
        if exc.code >= 500:
            return DownloadError(
                f"Model '{model}': the server of {url} is failing (HTTP {exc.code} {exc.reason}); try again later, or {by_hand}."
            )
        return DownloadError(
            f"Model '{model}': {url} answered HTTP {exc.code} {exc.reason}; check the URL in the models manifest, "
            f"or {by_hand}."
        )
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, socket.gaierror):
        what = "the server name cannot be resolved (no network, or DNS blocked)"
    elif isinstance(reason, ConnectionRefusedError):
        what = "the connection was refused (the server is down, or a firewall or proxy blocks it)"
    elif isinstance(reason, ssl.SSLCertVerificationError):
        what = (
            "the server's certificate cannot be verified (a proxy that inspects HTTPS?); point SSL_CERT_FILE "
            "to your organisation's CA bundle"
        )
    elif isinstance(reason, (TimeoutError, socket.timeout)):
        what = "the connection timed out (no network, or a firewall drops it)"
    else:
        what = f"the download failed ({reason})"
    return DownloadError(
        f"Model '{model}' cannot be downloaded from {url}: {what}. Check the network or the proxy settings "
        f"(https_proxy), or {by_hand}."
    )


def _disk_full(model: str, url: str, folder: Path, exc: OSError | None = None, need: int | None = None) -> DownloadError:
    detail = f" ({need / 1e6:.1f} MB more are needed)" if need else ""
    return DownloadError(
        f"Model '{model}' from {url}: the disk holding {folder} is full{detail}; free some space and run "
        "`mmseg models download` again (it resumes), or choose another cache folder with --cache or "
        "MMSEG_MODELS_CACHE."
    )


def _check_space(folder: Path, need: int, model: str, url: str) -> None:
    if need <= 0:
        return
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if free < need:
        raise _disk_full(model, url, folder, need=need - free)


# ----------------------------------------------------------------------------- transfer


def _open(url: str, offset: int, timeout: float) -> http.client.HTTPResponse:
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    opener = urllib.request.build_opener()  # honours http(s)_proxy / no_proxy from the environment
    return opener.open(request, timeout=timeout)


def _total_size(response: http.client.HTTPResponse, offset: int) -> int | None:
    content_range = response.headers.get("Content-Range", "")
    if response.status == 206 and "/" in content_range:
        total = content_range.rsplit("/", 1)[1].strip()
        return int(total) if total.isdigit() else None
    length = response.headers.get("Content-Length")
    if length and length.isdigit():
        return int(length) + (offset if response.status == 206 else 0)
    return None


def _transfer_once(
    url: str,
    part: Path,
    *,
    model: str,
    expected_size: int | None,
    timeout: float,
    progress: ProgressCallback | None,
    cancel: Callable[[], bool] | None,
    lock: FileLock | None,
) -> None:
    """One request: append to ``part`` from its current size; return when the body is complete."""
    offset = part.stat().st_size if part.exists() else 0
    if expected_size is not None and offset >= expected_size:
        return  # nothing left to fetch (the caller checks size and sha256)
    try:
        response = _open(url, offset, timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # the range is past the end: the part is complete or wrong
            return
        raise
    with response:
        if offset and response.status != 206:
            offset = 0  # the server ignores Range: start again
        total = _total_size(response, offset) or expected_size
        if total is not None:
            _check_space(part.parent, total - offset, model, url)
        with open(part, "r+b" if offset else "wb") as f:
            f.seek(offset)
            f.truncate()
            done = offset
            if progress is not None:
                progress(done, total)
            while True:
                if cancel is not None and cancel():
                    raise DownloadCancelled(
                        f"Download of model '{model}' from {url} was cancelled; {done} bytes are kept in {part} "
                        "and the next download resumes from there."
                    )
                chunk = response.read(CHUNK)
                if not chunk:
                    break
                f.write(chunk)
                done += len(chunk)
                if lock is not None:
                    lock.touch()
                if progress is not None:
                    progress(done, total)
            f.flush()
            os.fsync(f.fileno())
        if total is not None and done < total:
            raise http.client.IncompleteRead(b"", total - done)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _transfer(
    url: str,
    part: Path,
    *,
    model: str,
    expected_size: int | None,
    timeout: float,
    retries: int,
    progress: ProgressCallback | None,
    cancel: Callable[[], bool] | None,
    lock: FileLock | None,
) -> None:
    for attempt in range(retries + 1):
        try:
            _transfer_once(
                url, part, model=model, expected_size=expected_size, timeout=timeout,
                progress=progress, cancel=cancel, lock=lock,
            )
            return
        except DownloadError:
            raise
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise _disk_full(model, url, part.parent, exc) from exc
            cut = isinstance(exc, (ConnectionResetError, ConnectionAbortedError, TimeoutError, socket.timeout))
            if not cut or attempt == retries:
                raise _network_error(exc, model, url) from exc
        except http.client.HTTPException as exc:  # IncompleteRead, RemoteDisconnected, BadStatusLine...
            if attempt == retries:
                raise DownloadError(
                    f"Model '{model}': the connection to {url} was cut {retries + 1} time(s) "
                    f"({type(exc).__name__}); run `mmseg models download {model}` again (it resumes from "
                    f"{part.stat().st_size if part.exists() else 0} bytes), or {_by_hand(model, url)}."
                ) from exc
        time.sleep(min(0.5 * 2**attempt, 5.0))


def download_file(
    url: str,
    dest: str | Path,
    *,
    sha256: str,
    size: int | None = None,
    model: str | None = None,
    progress: ProgressCallback | None = None,
    cancel: Callable[[], bool] | None = None,
    timeout: float = TIMEOUT_SECONDS,
    retries: int = 3,
    lock_timeout: float = 600.0,
) -> Path:
    """Download ``url`` to ``dest`` (resumable, verified, atomic, locked) and return ``dest``.

    ``sha256`` is required: the file is renamed to ``dest`` only once it matches; a mismatch
    deletes it. ``size`` (bytes), when known, is checked first and used for the free-space check.
    ``timeout`` applies to connecting and to each read. ``cancel()`` returning True stops the
    transfer (:class:`DownloadCancelled`), keeping the ``.part`` file for a later resume.
    """
    dest = Path(dest)
    model = model or dest.name
    part = dest.with_name(dest.name + ".part")
    lock = FileLock(dest, timeout=lock_timeout)
    lock.acquire()
    try:
        if dest.is_file() and _sha256(dest) == sha256.lower():
            return dest  # fetched by another process while this one waited for the lock
        if size is not None:
            have = part.stat().st_size if part.exists() else 0
            _check_space(dest.parent, size - have, model, url)
        for attempt in range(2):
            _transfer(
                url, part, model=model, expected_size=size, timeout=timeout, retries=retries,
                progress=progress, cancel=cancel, lock=lock,
            )
            actual_size = part.stat().st_size if part.exists() else 0
            if size is not None and actual_size != size:
                part.unlink(missing_ok=True)
                if attempt == 0 and actual_size > size:
                    continue  # a stale part larger than the file: start again once
                raise DownloadError(
                    f"Model '{model}': {url} gave {actual_size} bytes but the models manifest expects {size}; "
                    f"the file was deleted and nothing was loaded. Check the manifest entry, or {_by_hand(model, url)}."
                )
            actual = _sha256(part)
            if actual != sha256.lower():
                part.unlink(missing_ok=True)
                raise DownloadError(
                    f"Model '{model}': the file downloaded from {url} has sha256 {actual} but the models manifest "
                    f"expects {sha256.lower()}; it was deleted and nothing was loaded (it was altered on the way, "
                    f"e.g. by a proxy, or the manifest is out of date). Try again, or {_by_hand(model, url)} "
                    "(the import checks the sha256 too)."
                )
            break
        try:
            os.replace(part, dest)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise _disk_full(model, url, dest.parent, exc) from exc
            raise
        return dest
    finally:
        lock.release()
