"""How the local backend starts a worker process: spawned from scratch, or forked warm from the fork server.

Both hand the new worker the two pipe ends it talks over; neither knows
about invocations. The spawn launcher starts ``python -m
squall.backends.local.worker`` (which loads the model itself: a cold start).
The fork launcher talks to one ``python -m squall.backends.local.zygote``
process that loaded the model once and forks a child per request (a warm start).
"""

from __future__ import annotations

import itertools
import json
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

from squall.owner_only import open_private
from squall.runtime.messages import Exited, Fork, Gone, Load, Message, decode, encode

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
    """The coordinator's end of the zygote (see :mod:`squall.backends.local.zygote` for the protocol).

    Each fork request carries a number that its ``forked`` and ``exited``
    answers repeat, so an answer is matched to the worker that asked for it
    whatever happened in between (a retired worker, a reused pid). Only
    :meth:`messages` reads the channel: an answer is never read anywhere the
    backend's selector would not wake up for it.
    """

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self._env = env
        self._log = log
        self._channel: socket.socket | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._requests = itertools.count(1)
        self._exits: dict[int, int] = {}
        self._forgotten: set[int] = set()

    def start(self, load: Load) -> None:
        """Start the zygote and ask it to load the model; its answer arrives through :meth:`messages`."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._process = start_process("squall.backends.local.zygote", (theirs.fileno(),), self._env, self._log)
        theirs.close()
        ours.setblocking(False)
        self._channel = ours
        ours.send(json.dumps(encode(load)).encode())

    def fileno(self) -> int:
        assert self._channel is not None
        return self._channel.fileno()

    def fork(self, worker: int, child_read: int, child_write: int) -> int | None:
        """Ask for a warm worker on these pipe ends; the request's number (its answers carry it), or ``None``
        if the zygote is gone."""
        assert self._channel is not None
        request = next(self._requests)
        message = json.dumps(encode(Fork(worker, request, time.time()))).encode()
        for _ in range(_SEND_TRIES):
            try:
                socket.send_fds(self._channel, [message], [child_read, child_write])
                return request
            except BlockingIOError:  # the zygote is busy forking: wait for room, it is not gone
                select.select([], [self._channel], [], 1.0)
            except OSError:
                return None
        return None

    def messages(self) -> list[Message]:
        """Every message the zygote sent since the last call, and :class:`Gone` when it has exited.
        :class:`Exited` messages are also remembered for :meth:`exit_code`."""
        assert self._channel is not None
        found: list[Message] = []
        while True:
            try:
                data = self._channel.recv(1 << 20)
            except BlockingIOError:
                return found
            except OSError:
                data = b""
            if not data:
                found.append(Gone())
                return found
            message = decode(json.loads(data))
            if isinstance(message, Exited) and message.request is not None:
                self._remember_exit(message.request, message.status)
            found.append(message)

    def exit_code(self, request: int) -> int | None:
        """The exit code of the worker forked for ``request``, once the zygote has reaped it and said so
        (``None`` until then)."""
        return self._exits.get(request)

    def forget(self, request: int) -> None:
        """The worker forked for ``request`` is retired: drop its exit code, now or when it comes."""
        if request in self._exits:
            del self._exits[request]
        else:
            self._forgotten.add(request)

    def _remember_exit(self, request: int, status: int) -> None:
        if request in self._forgotten:
            self._forgotten.discard(request)
        else:
            self._exits[request] = status

    def shutdown(self) -> None:
        """Kill the zygote at once: it holds nothing but the loaded model, and a clean exit takes longer."""
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None
