"""Model downloads against a loopback HTTP server: first use, resume, tampering, offline, proxy,
server errors, disk full, cancel, locks and two processes fetching one model."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import time
from collections import namedtuple

import pytest

from MultiModalSegLib import download
from MultiModalSegLib.bundle import load_bundle
from MultiModalSegLib.download import DownloadCancelled, DownloadError, FileLock, download_file
from MultiModalSegLib.models import resolve_model
from Testing.library.model_server import (
    REPO,
    SHIPPED_BUNDLE,
    ModelServer,
    closed_port,
    manifest_entry,
    sha256,
    write_manifest,
)

DATA = SHIPPED_BUNDLE.read_bytes()
PATH = "/models/abdomen-ummkd-1.0.0.zip"


@pytest.fixture()
def server():
    with ModelServer({PATH: DATA}) as s:
        yield s


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("MMSEG_MODELS_CACHE", str(folder))
    return folder


def leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith((".part", ".lock")) or ".stale." in p.name)


def test_first_use_downloads_verifies_and_loads(server, cache, tmp_path):
    manifest = write_manifest(tmp_path / "Models.json", [manifest_entry("abdomen-ummkd", server.url(PATH), DATA)])
    seen = []
    path, sha = resolve_model("abdomen-ummkd", manifest, progress=lambda d, t: seen.append((d, t)))
    assert path == cache / "abdomen-ummkd-1.0.0.zip"
    assert sha256(path.read_bytes()) == sha == sha256(DATA)
    assert load_bundle(path, expected_sha256=sha).name == "abdomen-ummkd"
    assert seen[-1] == (len(DATA), len(DATA)) and seen[0][0] == 0
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert leftovers(cache) == []
    # second use: from the cache, no request
    assert resolve_model("abdomen-ummkd", manifest) == (path, sha)
    assert len(server.requests) == 1


def test_resume_after_cut_connection(server, tmp_path):
    dest = tmp_path / "m.zip"
    server.cut_after = 2_000_000
    with pytest.raises(DownloadError, match=r"cut.*resumes from 2000000 bytes"):
        download_file(server.url(PATH), dest, sha256=sha256(DATA), size=len(DATA), model="m", retries=0)
    part = tmp_path / "m.zip.part"
    assert part.stat().st_size == 2_000_000 and not dest.exists()
    download_file(server.url(PATH), dest, sha256=sha256(DATA), size=len(DATA), model="m", retries=0)
    assert server.requests[-1] == (PATH, "bytes=2000000-")
    assert dest.read_bytes() == DATA and not part.exists()


def test_cut_connection_retried_within_one_call(server, tmp_path):
    dest = tmp_path / "m.zip"
    server.cut_after = 1_000_000
    download_file(server.url(PATH), dest, sha256=sha256(DATA), model="m")  # no size given: from the headers
    assert [r for _, r in server.requests] == [None, "bytes=1000000-"]
    assert dest.read_bytes() == DATA


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    dest = tmp_path / "m.zip"
    (tmp_path / "m.zip.part").write_bytes(b"garbage" * 100)
    server.ignore_range = True
    download_file(server.url(PATH), dest, sha256=sha256(DATA), size=len(DATA), model="m")
    assert server.requests[0][1] == "bytes=700-"
    assert dest.read_bytes() == DATA


def test_tampered_file_refused_and_removed(server, cache, tmp_path):
    tampered = bytearray(DATA)
    tampered[len(DATA) // 2] ^= 0xFF
    server.files[PATH] = bytes(tampered)
    manifest = write_manifest(tmp_path / "Models.json", [manifest_entry("abdomen-ummkd", server.url(PATH), DATA)])
    with pytest.raises(DownloadError) as info:
        resolve_model("abdomen-ummkd", manifest)
    message = str(info.value)
    assert "'abdomen-ummkd'" in message and server.url(PATH) in message
    assert f"expects {sha256(DATA)}" in message and "deleted and nothing was loaded" in message
    assert "mmseg models import" in message
    assert list(cache.iterdir()) == []


def test_offline_message_when_server_down(cache, tmp_path):
    url = f"http://127.0.0.1:{closed_port()}{PATH}"
    manifest = write_manifest(tmp_path / "Models.json", [manifest_entry("abdomen-ummkd", url, DATA)])
    with pytest.raises(DownloadError) as info:
        resolve_model("abdomen-ummkd", manifest)
    message = str(info.value)
    assert "Model 'abdomen-ummkd' cannot be downloaded from " + url in message
    assert "connection was refused" in message
    assert f"download {url} by hand" in message and "`mmseg models import FILE`" in message
    assert leftovers(cache) == []


def test_timeout_names_model_and_url(tmp_path):
    with socket.socket() as listener:  # accepts connections but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/x.zip"
        with pytest.raises(DownloadError, match=r"'m'.*x\.zip.*timed out.*mmseg models import"):
            download_file(url, tmp_path / "x.zip", sha256="0" * 64, model="m", timeout=0.3, retries=0)


def test_proxy_refusing(server, tmp_path, monkeypatch):
    with ModelServer({}) as proxy:
        proxy.status = 407
        for var in ("no_proxy", "NO_PROXY"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{proxy.port}")
        with pytest.raises(DownloadError) as info:
            download_file(server.url(PATH), tmp_path / "m.zip", sha256=sha256(DATA), model="m")
        assert proxy.requests and proxy.requests[0][0] == server.url(PATH)  # the request went to the proxy
    message = str(info.value)
    assert "proxy refused" in message and "407" in message and server.url(PATH) in message
    assert "https_proxy" in message and "mmseg models import" in message


@pytest.mark.parametrize("status, words", [(503, "server of .* is failing"), (404, "answered HTTP 404")])
def test_server_errors(server, tmp_path, status, words):
    server.status = status
    with pytest.raises(DownloadError, match=words + ".*mmseg models import"):
        download_file(server.url(PATH), tmp_path / "m.zip", sha256=sha256(DATA), model="m")


def test_disk_full_before_download(server, tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(download.shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(DownloadError, match=r"'m'.*disk holding .* is full .*--cache or MMSEG_MODELS_CACHE"):
        download_file(server.url(PATH), tmp_path / "m.zip", sha256=sha256(DATA), size=len(DATA), model="m")
    assert server.requests == []


def test_disk_full_while_writing(server, tmp_path, monkeypatch):
    class FullFile:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(download, "open", lambda *a, **k: FullFile(open(*a, **k)), raising=False)
    with pytest.raises(DownloadError, match=r"'m' from .*: the disk holding .* is full; free some space"):
        download_file(server.url(PATH), tmp_path / "m.zip", sha256=sha256(DATA), model="m")
    assert not (tmp_path / "m.zip").exists()


def test_wrong_size_refused(server, tmp_path):
    with pytest.raises(DownloadError, match=f"gave {len(DATA)} bytes but the models manifest expects 5327000"):
        download_file(server.url(PATH), tmp_path / "m.zip", sha256=sha256(DATA), size=5_327_000, model="m")
    assert list(tmp_path.iterdir()) == []


def test_cancel_keeps_part_for_resume(server, tmp_path):
    dest = tmp_path / "m.zip"
    got = []
    with pytest.raises(DownloadCancelled, match="cancelled"):
        download_file(
            server.url(PATH), dest, sha256=sha256(DATA), model="m",
            progress=lambda d, t: got.append(d), cancel=lambda: bool(got) and got[-1] > 500_000,
        )
    kept = (tmp_path / "m.zip.part").stat().st_size
    assert kept > 500_000 and not dest.exists() and not (tmp_path / "m.zip.lock").exists()
    download_file(server.url(PATH), dest, sha256=sha256(DATA), model="m")
    assert server.requests[-1][1] == f"bytes={kept}-" and dest.read_bytes() == DATA


def test_stale_lock_of_dead_process_is_broken(server, tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock = tmp_path / "m.zip.lock"
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout), "token": "old"}))
    download_file(server.url(PATH), tmp_path / "m.zip", sha256=sha256(DATA), model="m", lock_timeout=5)
    assert (tmp_path / "m.zip").read_bytes() == DATA and leftovers(tmp_path) == []


def test_old_lock_from_another_host_is_broken_live_one_waited_for(tmp_path):
    target = tmp_path / "m.zip"
    lock = tmp_path / "m.zip.lock"
    lock.write_text(json.dumps({"host": "elsewhere", "pid": 1, "token": "old"}))
    with pytest.raises(DownloadError, match=r"held by process 1 on elsewhere.*delete .*m\.zip\.lock"):
        FileLock(target, timeout=0.3).acquire()  # fresh: waited for, then a clear error
    old = time.time() - 3600
    os.utime(lock, (old, old))
    with FileLock(target, timeout=1) as held:
        assert json.loads(lock.read_text())["token"] == held.token
    assert not lock.exists()


CHILD = """
import sys
from MultiModalSegLib.download import download_file
download_file(sys.argv[1], sys.argv[2], sha256=sys.argv[3], model="m")
"""


def test_two_processes_fetching_one_model_end_with_one_good_copy(server, tmp_path):
    server.delay = 0.01  # about 0.8 s of transfer, so that the second process arrives during the first
    dest = tmp_path / "m.zip"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = [sys.executable, "-c", CHILD, server.url(PATH), str(dest), sha256(DATA)]
    procs = [subprocess.Popen(args, env=env, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errors = [p.communicate(timeout=60)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    assert server.full_gets(PATH) == 1 and len(server.requests) == 1  # the second waited, then found the file
    assert dest.read_bytes() == DATA
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.zip"]
