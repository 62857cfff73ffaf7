"""A real S3-compatible server on loopback (moto's server mode, as s3fs tests itself), and a log of what it served."""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from moto.server import ThreadedMotoServer

_REQUEST = re.compile(r'"([A-Z]+) (\S+) HTTP/[\d.]+" (\d{3})')
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "squall-test",
    "AWS_SECRET_ACCESS_KEY": "squall-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class RequestLog(logging.Handler):
    """Every request the server answered: (method, path, status)."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[tuple[str, str, int]] = []

    def emit(self, record: logging.LogRecord) -> None:
        match = _REQUEST.search(_ANSI.sub("", record.getMessage()))
        if match:
            self.requests.append((match[1], match[2], int(match[3])))

    def object_gets(self, key_prefix: str) -> list[tuple[str, int]]:
        """GETs of objects under ``/key_prefix`` (not listings): (path, status); 206 means a ranged read."""
        return [(path, status) for method, path, status in self.requests
                if method == "GET" and path.startswith(key_prefix) and "?" not in path]


@dataclass(frozen=True)
class Request:
    """One request as the server received it; ``range`` is its Range header (None: the whole object)."""

    method: str
    path: str
    query: str
    range: str | None

    @property
    def is_listing(self) -> bool:
        return self.method == "GET" and "list-type=" in self.query

    def range_bytes(self) -> int | None:
        """How many bytes a ``bytes=a-b`` range asks for; None for a request without one."""
        match = re.fullmatch(r"bytes=(\d+)-(\d+)", self.range or "")
        return int(match[2]) - int(match[1]) + 1 if match else None


class Traffic:
    """WSGI middleware on the server: every request, when each started and ended, and a gate that holds
    chosen requests until enough of them are in flight together (so that a client which sends them
    concurrently is seen to, whatever the timing, and one that sends them one by one is seen not to)."""

    def __init__(self, app: Callable[..., Any]) -> None:
        self.app = app
        self._changed = threading.Condition()
        self._clock = 0
        self.spans: list[tuple[Request, int, int | None]] = []
        self._gate: tuple[Callable[[Request], bool], int, float] | None = None

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = Request(environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""), environ.get("QUERY_STRING", ""),
                          environ.get("HTTP_RANGE"))
        with self._changed:
            self._clock += 1
            index = len(self.spans)
            self.spans.append((request, self._clock, None))
            self._changed.notify_all()
            self._wait_at_gate(request)
        try:
            return self.app(environ, start_response)
        finally:
            with self._changed:
                self._clock += 1
                self.spans[index] = (request, self.spans[index][1], self._clock)
                self._changed.notify_all()

    def _wait_at_gate(self, request: Request) -> None:
        if self._gate is None or not self._gate[0](request):
            return
        matches, count, deadline = self._gate
        while self.most_at_once(matches) < count and time.monotonic() < deadline:
            self._changed.wait(timeout=max(0.0, deadline - time.monotonic()))

    @contextmanager
    def held(self, matches: Callable[[Request], bool], count: int, timeout_s: float = 10.0) -> Iterator[None]:
        """While inside, a request that ``matches`` is answered only once ``count`` such requests have been in
        flight together (or ``timeout_s`` has passed: the client is not concurrent, and the test says so)."""
        with self._changed:
            self._gate = (matches, count, time.monotonic() + timeout_s)
        try:
            yield
        finally:
            with self._changed:
                self._gate = None
                self._changed.notify_all()

    def requests(self, matches: Callable[[Request], bool] = lambda r: True) -> list[Request]:
        with self._changed:
            return [request for request, _, _ in self.spans if matches(request)]

    def most_at_once(self, matches: Callable[[Request], bool]) -> int:
        """The most requests that ``matches`` the server held at the same time."""
        with self._changed:
            events = sorted((at, step) for request, start, end in self.spans if matches(request)
                            for at, step in ((start, 1), (end if end is not None else self._clock + 1, -1)))
        most = current = 0
        for _, step in events:
            current += step
            most = max(most, current)
        return most


@dataclass
class S3Server:
    """A running server: its endpoint, its request log, and the requests as it received them."""

    endpoint: str
    log: RequestLog
    traffic: Traffic


def serve() -> Iterator[S3Server]:
    """Start the server on a free loopback port; stop it when the generator closes."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    traffic = Traffic(server._server.app)  # type: ignore[union-attr]
    server._server.app = traffic  # type: ignore[union-attr]  # werkzeug calls server.app for each request
    host, port = server.get_host_and_port()
    log = RequestLog()
    werkzeug = logging.getLogger("werkzeug")
    werkzeug.addHandler(log)
    werkzeug.setLevel(logging.INFO)
    try:
        yield S3Server(f"http://{host}:{port}", log, traffic)
    finally:
        werkzeug.removeHandler(log)
        server.stop()


def serve_with_credentials() -> Iterator[S3Server]:
    """:func:`serve`, with the test credentials in the environment (workers inherit them) while it runs."""
    saved = {name: os.environ.get(name) for name in CREDENTIALS}
    os.environ.update(CREDENTIALS)
    try:
        yield from serve()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
