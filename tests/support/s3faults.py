"""A fault-injecting HTTP proxy on loopback, put in front of the S3 server (:mod:`s3server`) to play the S3
that production meets: on a fraction of requests it answers ``503 SlowDown``, ``500 InternalError``, or
resets the connection (TCP RST) instead of passing the request on.

Which request gets which fault is drawn from a seeded generator, one draw per request in arrival order,
and every injected fault is counted by kind and by whether the request read (GET, HEAD) or wrote (PUT,
POST, DELETE), so a test can assert the faults really hit both.
"""

from __future__ import annotations

import http.client
import random
import socket
import struct
import threading
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterator
from urllib.parse import urlsplit

FAULTS = ("slowdown", "internal", "reset")
_ERROR_BODIES = {
    "slowdown": (503, "SlowDown", "Please reduce your request rate."),
    "internal": (500, "InternalError", "We encountered an internal error. Please try again."),
    "outage": (500, "InternalError", "We encountered an internal error. Please try again."),
}
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "expect", "te", "upgrade"}


def kind_of(method: str) -> str:
    """``read`` for GET and HEAD, ``write`` for the methods that change the store."""
    return "read" if method in ("GET", "HEAD") else "write"


@dataclass
class FaultPlan:
    """Which requests fail: each request independently with probability ``rate``, the fault chosen evenly
    among ``faults``, drawn from ``seed``; and, while ``outage`` is set, every request it matches
    (``outage(method, path)``) answers ``500 InternalError``, as a store that is down for those keys.
    ``injected`` counts (fault, read|write), with ``outage`` as the fault of the latter; ``seen`` counts requests."""

    rate: float
    seed: int = 0
    faults: tuple[str, ...] = FAULTS
    outage: Callable[[str, str], bool] | None = None
    injected: Counter[tuple[str, str]] = field(default_factory=Counter)
    seen: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        # One stream for reads and one for writes: the n-th write meets the same fate in every run, however
        # the reads of concurrent workers interleave with it.
        self._random = {kind: random.Random(f"{self.seed}-{kind}") for kind in ("read", "write")}
        self._lock = threading.Lock()

    def draw(self, method: str, path: str) -> str | None:
        """The fault for the next request (``None``: pass it on), counted."""
        with self._lock:
            kind = kind_of(method)
            self.seen[kind] += 1
            stream = self._random[kind]
            fault = stream.choice(self.faults) if stream.random() < self.rate else None
            if self.outage is not None and self.outage(method, path):
                fault = "outage"
            if fault is not None:
                self.injected[(fault, kind)] += 1
            return fault

    def count(self, kind: str) -> int:
        """Faults injected into requests of ``kind`` (``read`` or ``write``)."""
        with self._lock:
            return sum(n for (_, on), n in self.injected.items() if on == kind)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _ProxyServer

    def do_GET(self) -> None:
        self._proxy()

    do_HEAD = do_PUT = do_POST = do_DELETE = do_GET

    def log_message(self, format: str, *args: object) -> None:
        return None

    def _proxy(self) -> None:
        body = self._body()
        fault = self.server.plan.draw(self.command, self.path)
        if fault == "reset":
            self._reset()
        elif fault is not None:
            self._error(*_ERROR_BODIES[fault])
        else:
            self._forward(body)

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline().strip():  # trailers, then the blank line that ends them
                pass
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _reset(self) -> None:
        """Abort the connection with a TCP RST, as a load balancer that drops it does."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True

    def _error(self, status: int, code: str, message: str) -> None:
        payload = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
            f"<RequestId>squall-fault</RequestId></Error>"
        ).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("x-amz-request-id", "squall-fault")
        self.send_header("Content-Length", str(0 if self.command == "HEAD" else len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _forward(self, body: bytes) -> None:
        upstream = http.client.HTTPConnection(self.server.upstream_host, self.server.upstream_port, timeout=60)
        try:
            upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                    upstream.putheader(name, value)
            if body or self.command in ("PUT", "POST"):
                upstream.putheader("Content-Length", str(len(body)))
            upstream.endheaders(body or None)
            response = upstream.getresponse()
            payload = response.read()
        finally:
            upstream.close()
        self.send_response(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() not in _HOP_BY_HOP and (name.lower() != "content-length" or self.command == "HEAD"):
                self.send_header(name, value)
        if self.command != "HEAD":
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: str, plan: FaultPlan) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        parts = urlsplit(upstream)
        self.upstream_host, self.upstream_port = parts.hostname or "127.0.0.1", parts.port or 80
        self.plan = plan

    def handle_error(self, request: object, client_address: object) -> None:
        return None  # a reset connection is the point, not an error worth printing


@dataclass
class FaultyS3:
    """A running proxy: the endpoint to give squall, and the plan that says (and counts) what it injects."""

    endpoint: str
    plan: FaultPlan


@contextmanager
def serve_faulty(upstream: str, plan: FaultPlan) -> Iterator[FaultyS3]:
    """The proxy, on a free loopback port in front of ``upstream``, for as long as the ``with`` block runs."""
    server = _ProxyServer(upstream, plan)
    thread = threading.Thread(target=server.serve_forever, name="s3-fault-proxy", daemon=True)
    thread.start()
    try:
        yield FaultyS3(f"http://127.0.0.1:{server.server_address[1]}", plan)
    finally:
        server.shutdown()
        server.server_close()
