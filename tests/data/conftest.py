"""A local HTTP server on 127.0.0.1 that serves files the tests build, with Range support and failure modes."""

from __future__ import annotations

import re
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


@dataclass
class FileServer:
    url: str  # http://127.0.0.1:PORT
    files: dict[str, bytes] = field(default_factory=dict)  # URL path -> body
    truncate: set[str] = field(default_factory=set)  # paths whose body breaks off halfway (full Content-Length)
    ignore_range: set[str] = field(default_factory=set)  # paths served whole even when a Range is asked for
    reset: set[str] = field(default_factory=set)  # paths whose connection is reset (RST) after half the body
    announce: dict[str, int] = field(default_factory=dict)  # paths whose Content-Length claims this many bytes
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header) in order


class _Handler(BaseHTTPRequestHandler):
    server_state: FileServer  # set on the subclass made per fixture

    def do_GET(self) -> None:  # noqa: N802 (the http.server API)
        state = self.server_state
        asked = self.headers.get("Range")
        state.requests.append((self.path, asked))
        body = state.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", asked or "")
        if match and self.path not in state.ignore_range:
            start = int(match.group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        rest = body[start:]
        self.send_header("Content-Length", str(state.announce.get(self.path, len(rest))))
        self.end_headers()
        if self.path in state.reset:  # half the body, time to read it, then a reset instead of an orderly close
            self.wfile.write(rest[: len(rest) // 2])
            self.wfile.flush()
            time.sleep(0.3)
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
            return
        # A truncated transfer: announce every byte, send half, close the connection (HTTP/1.0 closes after this).
        self.wfile.write(rest[: len(rest) // 2] if self.path in state.truncate else rest)

    def log_message(self, *args) -> None:  # keep the test output clean
        pass


@pytest.fixture
def file_server(monkeypatch):
    """A threaded HTTP server on 127.0.0.1 (port chosen by the OS), always shut down after the test."""
    monkeypatch.setenv("no_proxy", "*")  # never send 127.0.0.1 through a proxy from the environment
    monkeypatch.delenv("ATTNKIT_DATA_MIRROR", raising=False)
    state = FileServer(url="")
    handler = type("Handler", (_Handler,), {"server_state": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
