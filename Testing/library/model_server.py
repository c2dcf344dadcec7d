"""A loopback HTTP server for model-download tests: serves files from memory, honours ``Range``,
and can misbehave on purpose (cut the body, answer an error status, throttle, ignore ranges)."""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHIPPED_BUNDLE = REPO / "Resources" / "Models" / "abdomen-ummkd-1.0.0.zip"


class ModelServer:
    """``files`` maps URL paths (``/m/x.zip``) to bytes. Settings may be changed while it runs:

    - ``cut_after``: on the next full (non-range) GET, send this many body bytes, then close;
    - ``status``: answer every request with this HTTP status and no body;
    - ``ignore_range``: answer 200 with the whole file even to a ``Range`` request;
    - ``delay``: seconds to sleep between 64 KiB chunks.

    ``requests`` records ``(path, range header or None)`` of every request.
    """

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = dict(files)
        self.cut_after: int | None = None
        self.status: int | None = None
        self.ignore_range = False
        self.delay = 0.0
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                if server.status is not None:
                    self.send_response(server.status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                if rng and not server.ignore_range:
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                body = data[start:]
                cut = server.cut_after if not rng else None
                if cut is not None:
                    server.cut_after = None
                    body = body[:cut]
                for i in range(0, len(body), 1 << 16):
                    self.wfile.write(body[i : i + (1 << 16)])
                    if server.delay:
                        time.sleep(server.delay)
                if cut is not None:
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True

        class QuietServer(ThreadingHTTPServer):
            def handle_error(self, request: object, client_address: object) -> None:
                pass  # a client that hangs up (cancel, timeout tests) is expected here

        self.httpd = QuietServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def full_gets(self, path: str) -> int:
        return sum(1 for p, r in self.requests if p == path and r is None)

    def __enter__(self) -> ModelServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released): connections to it are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def manifest_entry(name: str, url: str, data: bytes, *, version: str = "1.0.0", **extra: object) -> dict:
    """A manifest entry for a downloadable bundle ``data`` at ``url``."""
    entry = {
        "name": name,
        "version": version,
        "description": f"{name} test model",
        "method": "ummkd",
        "modalities": ["CT", "MR"],
        "labels": ["liver", "spleen", "kidney_right", "kidney_left"],
        "spacing": [3.0, 3.0, 3.0],
        "sha256": sha256(data),
        "size": len(data),
        "url": url,
        "licence": "Apache-2.0",
    }
    entry.update(extra)
    return entry


def write_manifest(path: Path, entries: list[dict]) -> Path:
    path.write_text(json.dumps({"format_version": 1, "models": entries}))
    return path


def bundle_version(src: Path, dest: Path, version: str) -> bytes:
    """A copy of bundle zip ``src`` whose metadata says ``version`` (same weights); returns its bytes."""
    import zipfile

    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_STORED) as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "metadata.json":
                meta = json.loads(data)
                meta["version"] = version
                data = json.dumps(meta).encode()
            zout.writestr(item.filename, data)
    return dest.read_bytes()
