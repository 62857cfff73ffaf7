"""A real ``squall serve`` for tests: uvicorn on a free loopback port, in a thread of the test process or as a process."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from contextlib import contextmanager
from typing import Iterator

import httpx
from fastapi import FastAPI

from squall.service.app import create_app
from squall.service.config import ServeConfig
from support.cli import SQUALL

FINAL = ("SUCCEEDED", "PARTIAL", "FAILED", "CANCELLED")


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def live_service(config: ServeConfig) -> Iterator[tuple[str, FastAPI]]:
    """Serve ``config`` over real HTTP; yields the base URL and the application."""
    import uvicorn

    app = create_app(config)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(90)


def serve_process(port: int, *args: str, env: dict[str, str] | None = None, timeout_s: float = 60) -> subprocess.Popen[str]:
    """``squall serve --port PORT ARGS`` as its own process (output to a pipe), once it answers ``/healthz``."""
    server = subprocess.Popen([*SQUALL, "serve", "--port", str(port), *args], env={**os.environ, **(env or {})},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                return server
        except httpx.TransportError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            raise AssertionError(f"squall serve did not start: {server.communicate()[0]}")
        time.sleep(0.1)
