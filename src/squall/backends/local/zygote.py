"""The fork server: load the model once, then fork warm workers from it in milliseconds.

A serverless platform restores a warm snapshot instead of booting a new
container; this is that, for one machine. The zygote imports the libraries
and loads the model once (the job's only true cold start), then answers each
fork request with a child that already holds the model, copy-on-write. A
worker killed for a timeout, a memory limit or a crash is therefore replaced
at once, and N workers cost one model load, not N.

Forking is only safe from a single-threaded process: a model whose loading
started threads (a thread pool in its runtime) is reported ``unforkable`` and
the backend falls back to starting each worker from scratch.

Protocol (SOCK_SEQPACKET, one :mod:`squall.runtime.messages` record per
message, as JSON): the coordinator sends :class:`Load`, then :class:`Fork`
with the child's two pipe ends attached; the zygote answers :class:`Ready` |
:class:`LoadFailed` | :class:`Unforkable`, then :class:`Forked` and
:class:`Exited`, which repeat the number the coordinator gave the fork request.
Run as ``python -m squall.backends.local.zygote SOCKET_FD``.
"""

from __future__ import annotations

import json
import os
import select
import socket
import sys
import time
import traceback

from squall.backends.local.worker import serve_jobs
from squall.errors import ErrorInfo
from squall.models.base import LoadedModel
from squall.runtime.instance import load_model
from squall.runtime.messages import Exited, Fork, Forked, Load, LoadFailed, Message, Ready, Stop, Unforkable, decode, encode
from squall.runtime.parent_death import die_with_parent

_MAX_MESSAGE = 1 << 20
_REAP_EVERY_S = 0.1


def main(sock_fd: int) -> int:
    """Load, then serve fork requests until the coordinator goes away; returns the exit code."""
    die_with_parent()
    channel = socket.socket(fileno=sock_fd)
    load = decode(json.loads(channel.recv(_MAX_MESSAGE)))
    assert isinstance(load, Load), f"the fork server's first message is Load, not {load}"
    try:
        model = load_model(load)
    except Exception as exc:
        _send(channel, LoadFailed(ErrorInfo.from_exception(exc, traceback.format_exc())))
        return 3
    threads = _thread_count()
    if threads > 1:
        _send(channel, Unforkable(threads))
        return 0
    _send(channel, Ready(os.getpid(), max(0.0, time.time() - load.spawned_at)))
    _serve_forks(channel, model)
    return 0


def _serve_forks(channel: socket.socket, model: LoadedModel) -> None:
    requests: dict[int, int] = {}  # pid of a live child -> the fork request it answered
    while True:
        readable, _, _ = select.select([channel], [], [], _REAP_EVERY_S)
        _report_exits(channel, requests)
        if not readable:
            continue
        data, fds, _, _ = socket.recv_fds(channel, _MAX_MESSAGE, 2)
        if not data:
            return
        request = decode(json.loads(data))
        if isinstance(request, Stop) or not isinstance(request, Fork):
            return
        zygote = os.getpid()
        pid = os.fork()
        if pid == 0:
            channel.close()
            os._exit(_child(fds, request, model, zygote))
        _own_group(pid)
        for fd in fds:
            os.close(fd)
        requests[pid] = request.request
        _send(channel, Forked(request.worker, request.request, pid))


def _child(fds: list[int], request: Fork, model: LoadedModel, zygote: int) -> int:
    try:
        _own_group(0)
        die_with_parent(zygote)
        return serve_jobs(fds[0], fds[1], request.worker, model, request.sent_at)
    except BaseException:  # a forked child must never return into the zygote's loop
        traceback.print_exc()
        return 1


def _own_group(pid: int) -> None:
    """Make the child the leader of its own process group, from both sides of the fork.

    Whichever side runs first wins, so a kill of the group right after the fork
    cannot miss the child; the other side's call then finds nothing to do.
    """
    try:
        os.setpgid(pid, 0)
    except (PermissionError, ProcessLookupError):
        pass


def _report_exits(channel: socket.socket, requests: dict[int, int]) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _send(channel, Exited(requests.pop(pid, None), pid, os.waitstatus_to_exitcode(status)))


def _thread_count() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 2  # cannot tell: do not fork


def _send(channel: socket.socket, message: Message) -> None:
    channel.send(json.dumps(encode(message)).encode())


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1])))
