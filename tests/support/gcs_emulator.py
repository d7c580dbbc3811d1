"""A real GCS JSON-API emulator for tests, plus a forwarding proxy that can refuse.

Why: every remote code path in vitzoo is exercised against a faithful local
stand-in, never the network. ``gcp-storage-emulator`` (pure Python, in-memory)
speaks the JSON API that gcsfs uses, including ranged downloads, md5Hash, crc32c
and generation. It cannot answer 403, so :class:`GatewayServer` sits in front of
it: it forwards requests unchanged, answers a GCS-style 403 (or any status) for the
paths you choose, counts the body bytes it relays and records each request's
``Range`` header, which is how resume tests prove only the missing bytes moved.

Usage from other test modules::

    from tests.support.gcs_emulator import GatewayServer
    def test_x(gcs):            # fixture from tests/conftest.py
        gcs.create_bucket("vit_models")
        gcs.upload("vit_models", "augreg/index.csv", b"...")
        # VITZOO_GCS_ENDPOINT already points at the emulator for this test
"""

from __future__ import annotations

import http.client
import json
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HOST = "127.0.0.1"


def _quiet_handle_error(original: Callable[..., None]) -> Callable[..., None]:
    """Keep the servers' real errors, drop the clients that hang up early (403s, aborts)."""

    def handle_error(request: Any, client_address: Any) -> None:
        import sys

        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        original(request, client_address)

    return handle_error


class Emulator:
    """A running in-memory ``gcp-storage-emulator`` on a free port of 127.0.0.1."""

    def __init__(self) -> None:
        from gcp_storage_emulator.server import create_server

        # Port 0: the OS picks a free port at bind time, so parallel workers never clash.
        self._server = create_server(HOST, 0, in_memory=True)
        self._server.start()
        httpd = self._server._api._httpd  # the package does not expose the bound port
        self.port: int = httpd.server_address[1]
        self.url = f"http://{HOST}:{self.port}"
        httpd.handle_error = _quiet_handle_error(httpd.handle_error)

    def stop(self) -> None:
        self._server.stop()

    def wipe(self) -> None:
        """Delete every bucket and object (the emulator's own /wipe endpoint)."""
        self._server.wipe(keep_buckets=False)

    def _request(self, method: str, path: str, body: bytes | None = None,
                 content_type: str = "application/json") -> tuple[int, dict[str, Any]]:
        """One request to the emulator; the whole answer is read so it never sees a broken pipe."""
        conn = http.client.HTTPConnection(HOST, self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers={"Content-Type": content_type})
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        try:
            payload = json.loads(raw) if raw else {}
        except ValueError:
            payload = {"text": raw.decode("utf-8", "replace")}
        return resp.status, payload

    def _ok(self, method: str, path: str, body: bytes | None = None,
            content_type: str = "application/json") -> dict[str, Any]:
        status, payload = self._request(method, path, body, content_type)
        if status >= 400:
            raise RuntimeError(f"emulator answered {status} to {method} {path}: {payload}")
        return payload

    def create_bucket(self, name: str) -> None:
        """Create ``name`` if it does not exist yet (idempotent across tests)."""
        if self._request("GET", f"/storage/v1/b/{name}")[0] == 404:
            self._ok("POST", "/storage/v1/b", json.dumps({"name": name}).encode())

    def upload(self, bucket: str, name: str, data: bytes) -> dict[str, Any]:
        """Upload an object through the JSON upload API; returns its GCS metadata."""
        query = urllib.parse.urlencode({"uploadType": "media", "name": name})
        return self._ok("POST", f"/upload/storage/v1/b/{bucket}/o?{query}", data,
                        "application/octet-stream")

    def delete(self, bucket: str, name: str) -> None:
        quoted = urllib.parse.quote(name, safe="")
        self._ok("DELETE", f"/storage/v1/b/{bucket}/o/{quoted}")


def object_path_prefix(bucket: str, prefix: str = "") -> tuple[str, ...]:
    """URL path prefixes that address objects of ``bucket`` under ``prefix``.

    gcsfs reads metadata from ``/storage/v1/b/{bucket}/o/{name}``, lists with
    ``/storage/v1/b/{bucket}/o?prefix=...`` and downloads media from
    ``/download/storage/v1/b/{bucket}/o/{name}``; object names are %-quoted.
    """
    quoted = urllib.parse.quote(prefix, safe="")
    return (
        f"/storage/v1/b/{bucket}/o/{quoted}",
        f"/download/storage/v1/b/{bucket}/o/{quoted}",
        f"/storage/v1/b/{bucket}/o?",  # listings (prefix filtered by the caller)
    )


@dataclass
class Recorded:
    method: str
    path: str
    range: str | None
    status: int
    body_bytes: int


@dataclass
class GatewayServer:
    """Forwarding HTTP proxy in front of ``upstream`` that can refuse chosen paths.

    ``deny(path) -> int | None``: return a status (403, 401, 404, 500...) to answer
    instead of forwarding, with a GCS-style JSON error body; None forwards.
    ``bytes_served`` counts response body bytes relayed from upstream; ``requests``
    records each request; :meth:`media_bytes` counts object content only.
    Point ``VITZOO_GCS_ENDPOINT`` at :attr:`url`.
    """

    upstream: str
    deny: Callable[[str], int | None] = lambda path: None
    delay_s: float = 0.0  # pause before relaying object media (to make downloads overlap)
    requests: list[Recorded] = field(default_factory=list)
    bytes_served: int = 0

    def __post_init__(self) -> None:
        gateway = self
        parsed = urllib.parse.urlsplit(self.upstream)
        self._lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _relay(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                status = gateway.deny(self.path)
                if status is not None:
                    payload = json.dumps({"error": {"code": status, "message": (
                        "Anonymous caller does not have storage.objects.get access "
                        "to the Google Cloud Storage object." if status == 403 else
                        http.client.responses.get(status, "error"))}}).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                    gateway._record(self.command, self.path, self.headers.get("Range"),
                                    status, 0)
                    return
                if gateway.delay_s and "/download/" in self.path:
                    import time

                    time.sleep(gateway.delay_s)
                conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "connection", "keep-alive")}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                self.send_response(resp.status)
                for key, value in resp.getheaders():
                    if key.lower() not in ("connection", "transfer-encoding", "content-length",
                                           "server", "date"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                gateway._record(self.command, self.path, self.headers.get("Range"),
                                resp.status, 0 if self.command == "HEAD" else len(data))

            do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = _relay

        self._httpd = ThreadingHTTPServer((HOST, 0), Handler)
        self._httpd.daemon_threads = True
        self._httpd.handle_error = _quiet_handle_error(self._httpd.handle_error)
        self.port = self._httpd.server_address[1]
        self.url = f"http://{HOST}:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def _record(self, method: str, path: str, rng: str | None, status: int, n: int) -> None:
        with self._lock:
            self.requests.append(Recorded(method, path, rng, status, n))
            self.bytes_served += n

    def media_bytes(self) -> int:
        """Object content relayed (JSON-API media downloads and public URLs, not metadata)."""
        with self._lock:
            return sum(r.body_bytes for r in self.requests
                       if r.path.startswith("/download/") or not r.path.startswith("/storage/"))

    def reset_counts(self) -> None:
        with self._lock:
            self.requests.clear()
            self.bytes_served = 0

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def deny_paths(prefixes: tuple[str, ...], status: int = 403) -> Callable[[str], int | None]:
    """A ``deny`` callable refusing every request whose path starts with one of ``prefixes``."""
    return lambda path: status if path.startswith(prefixes) else None


def closed_port_url() -> str:
    """``http://127.0.0.1:<port>`` where nothing listens (bound, then released)."""
    import socket

    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port = sock.getsockname()[1]
    return f"http://{HOST}:{port}"
