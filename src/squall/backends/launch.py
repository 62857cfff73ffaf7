"""How the local backend starts a worker process: spawned from scratch, or forked warm from the fork server.

Both hand the new worker the two pipe ends it talks over; neither knows
about invocations. The spawn launcher starts ``python -m
squall.runtime.worker`` (which loads the model itself: a cold start). The
fork launcher talks to one ``python -m squall.runtime.zygote`` process that
loaded the model once and forks a child per request (a warm start).
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from squall.owner_only import open_private

_SEND_TRIES = 30


def start_process(module: str, fds: tuple[int, ...], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``python -m module FD...`` in its own session, output to ``log``, the fds inherited."""
    with open_private(log, "ab") as output:
        return subprocess.Popen(
            [sys.executable, "-m", module, *map(str, fds)],
            pass_fds=fds,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )


class ForkServer:
    """The coordinator's end of the zygote (see :mod:`squall.runtime.zygote` for the protocol)."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self._env = env
        self._log = log
        self._channel: socket.socket | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._exits: dict[int, int] = {}
        self._pending: list[dict[str, Any]] = []

    def start(self, init: dict[str, Any]) -> None:
        """Start the zygote and ask it to load the model; its answer arrives through :meth:`messages`."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._process = start_process("squall.runtime.zygote", (theirs.fileno(),), self._env, self._log)
        theirs.close()
        ours.setblocking(False)
        self._channel = ours
        ours.send(json.dumps(init).encode())

    def fileno(self) -> int:
        assert self._channel is not None
        return self._channel.fileno()

    def fork(self, worker: int, child_read: int, child_write: int) -> bool:
        """Ask for a warm worker on these pipe ends; ``False`` if the zygote is gone."""
        assert self._channel is not None
        request = json.dumps({"type": "fork", "worker": worker, "sent_at": time.time()}).encode()
        for _ in range(_SEND_TRIES):
            try:
                socket.send_fds(self._channel, [request], [child_read, child_write])
                return True
            except BlockingIOError:  # the zygote is busy forking: wait for room, it is not gone
                select.select([], [self._channel], [], 1.0)
            except OSError:
                return False
        return False

    def messages(self) -> list[dict[str, Any]]:
        """Every message the zygote sent since the last call (``exited`` ones are also remembered);
        a ``{"type": "gone"}`` message when it has exited."""
        assert self._channel is not None
        found, self._pending = self._pending, []
        while True:
            try:
                data = self._channel.recv(1 << 20)
            except BlockingIOError:
                return found
            except OSError:
                data = b""
            if not data:
                found.append({"type": "gone"})
                return found
            message = json.loads(data)
            if message["type"] == "exited":
                self._exits[int(message["pid"])] = int(message["status"])
            found.append(message)

    def exit_code(self, pid: int, timeout: float = 1.0) -> int | None:
        """The exit code of a forked worker, once the zygote has reaped it (waits up to ``timeout``)."""
        deadline = time.monotonic() + timeout
        while pid not in self._exits and time.monotonic() < deadline:
            select.select([self.fileno()], [], [], max(0.0, deadline - time.monotonic()))
            self._pending.extend(self.messages())
        return self._exits.get(pid)

    def shutdown(self) -> None:
        """Kill the zygote at once: it holds nothing but the loaded model, and a clean exit takes longer."""
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None
