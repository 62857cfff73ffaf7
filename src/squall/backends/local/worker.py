"""A local worker process: one warm function instance, spoken to over two pipes.

Started from scratch (``python -m squall.backends.local.worker READ_FD
WRITE_FD``) it receives :class:`~squall.runtime.messages.Load` first and loads
the model itself while the coordinator is still planning; forked from the
fork server (:mod:`squall.backends.local.zygote`) it starts with the model
already loaded. Either way it then says it is ready, receives the job's task
once and serves invocations one at a time until told to stop or its pipe
closes. It never opens the job store.
"""

from __future__ import annotations

import os
import sys
import time
import traceback

from squall.backends.local import wire
from squall.errors import ErrorInfo
from squall.models.base import LoadedModel
from squall.runtime.instance import WarmInstance, load_model
from squall.runtime.messages import Configure, Invoke, Load, LoadFailed, Ready, Reported, Stop
from squall.runtime.parent_death import die_with_parent


def serve(read_fd: int, write_fd: int) -> int:
    """Load the model, then serve until stopped; returns the process exit code."""
    die_with_parent()
    message = wire.receive(read_fd)
    if message is None:
        return 0
    assert isinstance(message, Load), f"a worker's first message is Load, not {message}"
    try:
        model = load_model(message)
    except Exception as exc:
        return load_failed(write_fd, exc)
    return serve_jobs(read_fd, write_fd, message.worker, model, message.spawned_at or time.time())


def serve_jobs(read_fd: int, write_fd: int, worker: int, model: LoadedModel, started_at: float) -> int:
    """Report ready (its start-up counted from ``started_at``), then serve the task and invocations until stopped."""
    wire.send(write_fd, Ready(os.getpid(), max(0.0, time.time() - started_at)))
    instance = WarmInstance(worker, model)
    while True:
        message = wire.receive(read_fd)
        if message is None or isinstance(message, Stop):
            return 0
        if isinstance(message, Configure):
            try:
                instance.configure(message.task)
            except Exception as exc:
                return load_failed(write_fd, exc)
        elif isinstance(message, Invoke):
            wire.send(write_fd, Reported(instance.invoke(message)))


def load_failed(write_fd: int, exc: BaseException) -> int:
    """Tell the coordinator the model cannot be loaded; returns the exit code."""
    wire.send(write_fd, LoadFailed(ErrorInfo.from_exception(exc, traceback.format_exc())))
    return 3


if __name__ == "__main__":
    sys.exit(serve(int(sys.argv[1]), int(sys.argv[2])))
