"""A real S3-compatible server on loopback (moto's server mode, as s3fs tests itself), and a log of what it served."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from typing import Iterator

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


@dataclass
class S3Server:
    """A running server: its endpoint and its request log."""

    endpoint: str
    log: RequestLog


def serve() -> Iterator[S3Server]:
    """Start the server on a free loopback port; stop it when the generator closes."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    log = RequestLog()
    werkzeug = logging.getLogger("werkzeug")
    werkzeug.addHandler(log)
    werkzeug.setLevel(logging.INFO)
    try:
        yield S3Server(f"http://{host}:{port}", log)
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
