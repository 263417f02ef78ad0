"""Test infrastructure for the S3 tests: a real S3-compatible server on loopback, and a proxy
in front of it that injects faults.

- `MotoServer` runs moto's standalone server (`python -m moto.server`) as a child process on
  a free loopback port. A separate process, so that the server's memory never counts in the
  client's memory measurements, and so the client talks HTTP to it exactly as to S3.
- `FaultProxy` forwards every request to that server, records it, and answers chosen
  requests with a fault instead: a 503 SlowDown, a 500, a 403 AccessDenied, a connection
  reset, a body cut in the middle, or a stall longer than the client's read timeout.
"""

from __future__ import annotations

import http.client
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

LOOPBACK = "127.0.0.1"
_PIECE = 64 * 1024  # bytes relayed at a time: the proxy never holds a whole object

_ERROR_BODIES = {
    503: ("SlowDown", "Please reduce your request rate."),
    500: ("InternalError", "We encountered an internal error. Please try again."),
    403: ("AccessDenied", "Access Denied"),
}


def free_port() -> int:
    """A TCP port that was free on loopback a moment ago."""
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


class MotoServer:
    """moto's standalone S3-compatible server in a child process on a free loopback port."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.endpoint = f"http://{LOOPBACK}:{self.port}"
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p", str(self.port)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._log_path = log_path
        self._wait_until_ready()

    def _wait_until_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto server exited with {self.process.returncode}: {self._log_path.read_text()}")
            try:
                connection = http.client.HTTPConnection(LOOPBACK, self.port, timeout=2)
                connection.request("GET", "/moto-api/")
                connection.getresponse().read()
                connection.close()
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"moto server did not answer on {self.endpoint} within {timeout_s:.0f} s")

    def reset(self) -> None:
        """Forget every bucket and object (moto's own reset endpoint)."""
        connection = http.client.HTTPConnection(LOOPBACK, self.port, timeout=10)
        connection.request("POST", "/moto-api/reset")
        connection.getresponse().read()
        connection.close()

    def stop(self) -> None:
        """Stop the child process this object started."""
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self._log.close()


@dataclass
class Fault:
    """Answer the first `times` requests matching `method` and `pattern` with `kind`.

    `pattern` is a regular expression searched in the decoded request target (path and
    query), e.g. `list-type=2` for ListObjectsV2 or `/hour=12/` for objects of hour 12.
    """

    method: str
    pattern: str
    kind: str  # "503" | "500" | "403" | "reset" | "truncate" | "stall"
    times: int = 1
    stall_s: float = 0.0
    hits: int = 0


@dataclass(frozen=True)
class SeenRequest:
    """One request the proxy received (its `Range` header, if any), and what the proxy did
    with it (`forwarded` or a fault kind)."""

    method: str
    target: str
    outcome: str
    range: str | None = None


@dataclass
class FaultProxy:
    """An HTTP proxy on loopback in front of the S3 server, injecting `Fault`s."""

    upstream_port: int
    faults: list[Fault] = field(default_factory=list)
    seen: list[SeenRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        proxy = self

        class Handler(_ProxyHandler):
            owner = proxy

        self._server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self._server.daemon_threads = True
        self.endpoint = f"http://{LOOPBACK}:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)
        self._thread.start()

    def inject(self, method: str, pattern: str, kind: str, times: int = 1, stall_s: float = 0.0) -> Fault:
        """Add a fault; returns it (its `hits` count how often it fired)."""
        fault = Fault(method, pattern, kind, times, stall_s)
        with self._lock:
            self.faults.append(fault)
        return fault

    def requests(self, method: str, pattern: str) -> list[SeenRequest]:
        """Requests seen so far with this method whose decoded target matches `pattern`."""
        with self._lock:
            return [seen for seen in self.seen if seen.method == method and re.search(pattern, seen.target)]

    def _decide(self, method: str, target: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.method == method and fault.hits < fault.times and re.search(fault.pattern, target):
                    fault.hits += 1
                    return fault
            return None

    def _record(self, method: str, target: str, outcome: str, range_header: str | None) -> None:
        with self._lock:
            self.seen.append(SeenRequest(method, target, outcome, range_header))

    def stop(self) -> None:
        """Stop serving (requests in flight finish on their daemon threads)."""
        self._server.shutdown()
        self._server.server_close()


class _ProxyHandler(BaseHTTPRequestHandler):
    owner: FaultProxy
    protocol_version = "HTTP/1.1"  # keep-alive, as botocore's connection pool expects

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the proxy's record of requests is `FaultProxy.seen`."""

    def do_GET(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def _handle(self) -> None:
        body = self._read_request_body()
        target = urllib.parse.unquote(self.path)
        fault = self.owner._decide(self.command, target)
        self.owner._record(self.command, target, fault.kind if fault else "forwarded", self.headers.get("Range"))
        if fault is None:
            self._forward(body)
        elif fault.kind in ("503", "500", "403"):
            self._send_error_response(int(fault.kind))
        elif fault.kind == "reset":
            self._reset()
        elif fault.kind == "truncate":
            self._forward(body, cut_body=True)
        elif fault.kind == "stall":
            time.sleep(fault.stall_s)
            self._reset()
        else:
            raise ValueError(f"unknown fault kind {fault.kind!r}")

    def _read_request_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", ""):
            raw = bytearray()
            while True:
                size_line = self.rfile.readline()
                raw += size_line
                size = int(size_line.split(b";")[0].strip(), 16)
                raw += self.rfile.read(size + 2)  # the chunk and its CRLF
                if size == 0:
                    # Trailers (aws-chunked checksums) until the empty line.
                    while True:
                        line = self.rfile.readline()
                        raw += line
                        if line in (b"\r\n", b"\n", b""):
                            return bytes(raw)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _forward(self, body: bytes, cut_body: bool = False) -> None:
        upstream = http.client.HTTPConnection(LOOPBACK, self.owner.upstream_port, timeout=60)
        try:
            upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                upstream.putheader(name, value)
            upstream.endheaders(body or None)
            response = upstream.getresponse()
            length = response.getheader("Content-Length")
            payload = None if length is not None or self.command == "HEAD" else response.read()
            self.send_response_only(response.status, response.reason)
            for name, value in response.getheaders():
                if name.lower() not in ("connection", "keep-alive", "transfer-encoding", "content-length"):
                    self.send_header(name, value)
            total = int(length) if length is not None else len(payload or b"")
            self.send_header("Content-Length", str(total))
            self.end_headers()
            if self.command == "HEAD":
                return
            sent = 0
            limit = total // 2 if cut_body else total
            while sent < limit:
                piece = (
                    payload[sent : sent + _PIECE] if payload is not None else response.read(min(_PIECE, limit - sent))
                )
                piece = piece[: limit - sent]
                if not piece:
                    break
                self.wfile.write(piece)
                sent += len(piece)
            self.wfile.flush()
            if cut_body:
                # End the stream cleanly (FIN) short of Content-Length: the client receives
                # exactly the bytes sent, then a premature end. (An RST here would also discard
                # whatever was still in flight, so the cut point would depend on timing.)
                self.connection.shutdown(socket.SHUT_WR)
                self.close_connection = True
        finally:
            upstream.close()

    def _send_error_response(self, status: int) -> None:
        code, message = _ERROR_BODIES[status]
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
            f"<RequestId>fault-proxy</RequestId></Error>"
        ).encode()
        self.send_response_only(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _reset(self) -> None:
        """Drop the connection without (the rest of) a response: RST instead of FIN."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
