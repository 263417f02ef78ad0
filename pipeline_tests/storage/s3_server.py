"""Test infrastructure for the S3 tests: a real S3-compatible server on loopback, and a proxy
in front of it that injects faults.

- `MotoServer` runs moto's standalone server (`python -m moto.server`) as a child process on
  a free loopback port. A separate process, so that the server's memory never counts in the
  client's memory measurements, and so the client talks HTTP to it exactly as to S3.
- `FaultProxy` forwards every request to that server, records it, and answers chosen
  requests with a fault instead: a 503 SlowDown, a 500, a 403 AccessDenied, a connection
  reset, a body cut in the middle, or a stall longer than the client's read timeout. It
  serves boto3, delta-rs and pyarrow alike, from a child process of its own.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

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


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class SeenRequest:
    """One request the proxy received (its `Range` header, if any), and what the proxy did
    with it (`forwarded` or a fault kind)."""

    method: str
    target: str
    outcome: str
    range: str | None = None


class InjectedFault:
    """A fault added to a running proxy; `hits` counts how often it has fired so far."""

    def __init__(self, proxy: FaultProxy, index: int, fault: Fault) -> None:
        self._proxy = proxy
        self._index = index
        self.fault = fault

    @property
    def hits(self) -> int:
        return self._proxy._call("hits", self._index)

    def __repr__(self) -> str:
        return f"InjectedFault({self.fault}, hits={self.hits})"


class FaultProxy:
    """An HTTP proxy on loopback in front of the S3 server, injecting `Fault`s.

    It runs in a child process of its own (this file run as a script, standard library only),
    controlled by JSON lines on its standard input and output: as a thread of the test
    process it would share the GIL with the pipeline it serves (parse threads, Dagster), so
    how fast it relays would depend on them."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._lock = threading.Lock()
        self._process = subprocess.Popen(
            [sys.executable, __file__, str(upstream_port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        ready = self._process.stdout.readline() if self._process.stdout else ""
        if not ready.strip().isdigit():
            self.stop()
            raise RuntimeError(f"the fault proxy did not start (it said {ready!r})")
        self.endpoint = f"http://{LOOPBACK}:{ready.strip()}"

    def inject(self, method: str, pattern: str, kind: str, times: int = 1, stall_s: float = 0.0) -> InjectedFault:
        """Add a fault; returns it (its `hits` count how often it fired)."""
        fault = Fault(method, pattern, kind, times, stall_s)
        return InjectedFault(self, self._call("inject", dataclasses.asdict(fault)), fault)

    @property
    def seen(self) -> list[SeenRequest]:
        """Every request received so far, oldest first."""
        return [SeenRequest(**seen) for seen in self._call("seen")]

    def requests(self, method: str, pattern: str) -> list[SeenRequest]:
        """Requests seen so far with this method whose decoded target matches `pattern`."""
        return [seen for seen in self.seen if seen.method == method and re.search(pattern, seen.target)]

    def _call(self, command: str, argument: object = None) -> Any:
        with self._lock:
            assert self._process.stdin is not None and self._process.stdout is not None
            self._process.stdin.write(json.dumps([command, argument]) + "\n")
            self._process.stdin.flush()
            return json.loads(self._process.stdout.readline())

    def stop(self) -> None:
        """Stop the child process this object started (requests in flight are cut)."""
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=10)
        for stream in (self._process.stdin, self._process.stdout):
            if stream is not None:
                stream.close()


class _ProxyState:
    """The faults and the record of requests, in the proxy's process."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.lock = threading.Lock()
        self.faults: list[Fault] = []
        self.hits: list[int] = []
        self.seen: list[SeenRequest] = []

    def decide(self, method: str, target: str) -> Fault | None:
        with self.lock:
            for index, fault in enumerate(self.faults):
                if fault.method == method and self.hits[index] < fault.times and re.search(fault.pattern, target):
                    self.hits[index] += 1
                    return fault
            return None

    def record(self, method: str, target: str, outcome: str, range_header: str | None) -> None:
        with self.lock:
            self.seen.append(SeenRequest(method, target, outcome, range_header))

    def answer(self, command: str, argument: Any) -> Any:
        with self.lock:
            if command == "inject":
                self.faults.append(Fault(**argument))
                self.hits.append(0)
                return len(self.faults) - 1
            if command == "hits":
                return self.hits[argument]
            if command == "seen":
                return [dataclasses.asdict(seen) for seen in self.seen]
        raise ValueError(f"unknown command {command!r}")


def _serve_proxy(upstream_port: int) -> None:
    """The proxy's process: serve HTTP on a free loopback port (printed first), and answer the
    commands read from standard input until it closes."""
    state = _ProxyState(upstream_port)

    class Handler(_ProxyHandler):
        owner = state

    server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="fault-proxy", daemon=True).start()
    print(server.server_address[1], flush=True)
    for line in sys.stdin:
        command, argument = json.loads(line)
        print(json.dumps(state.answer(command, argument)), flush=True)


class _ProxyHandler(BaseHTTPRequestHandler):
    owner: _ProxyState
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
        fault = self.owner.decide(self.command, target)
        self.owner.record(self.command, target, fault.kind if fault else "forwarded", self.headers.get("Range"))
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
        """The request's body as sent (chunked framing included, to be forwarded as is)."""
        if "chunked" not in self.headers.get("Transfer-Encoding", ""):
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""
        raw = bytearray()
        while True:
            size_line = self.rfile.readline()
            if not size_line:
                raise ConnectionError("the client closed the connection inside a chunked body")
            raw += size_line
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                break
            raw += self.rfile.read(size + 2)  # the chunk and its CRLF
        # After the last (empty) chunk: trailer fields, if any, then the empty line that ends the
        # body. pyarrow's UploadPart (aws-chunked inside HTTP chunked, its checksum trailer in
        # the aws-chunked body) sends that empty line at once: reading on past it (as this proxy
        # once did) waits for bytes that never come, until pyarrow's read timeout.
        while True:
            line = self.rfile.readline()
            raw += line
            if line in (b"\r\n", b"\n", b""):
                return bytes(raw)

    def _forward(self, body: bytes, cut_body: bool = False) -> None:
        upstream = http.client.HTTPConnection(LOOPBACK, self.owner.upstream_port, timeout=60)
        try:
            upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                # `Expect: 100-continue` was answered here already (BaseHTTPRequestHandler).
                if name.lower() != "expect":
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


if __name__ == "__main__":
    _serve_proxy(int(sys.argv[1]))
