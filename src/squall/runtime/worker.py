"""The worker process: a warm function instance.

It loads the model as soon as it starts (the cold start, timed from the
moment the coordinator spawned it), while the coordinator is still planning; then it receives the
job's task once and serves invocations one at a time until told to stop or
its pipe closes. It never opens the job store: it receives chunk
descriptors and returns reports. Run as
``python -m squall.runtime.worker READ_FD WRITE_FD``.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from typing import Any

from squall.errors import ErrorInfo
from squall.io import storage
from squall.models.base import LoadedModel, ModelRef
from squall.models.registry import load_warm
from squall.plan.chunk import Chunk
from squall.runtime import wire
from squall.runtime.invocation import Steps, invoke
from squall.runtime.task import JobTask


def serve(read_fd: int, write_fd: int) -> int:
    """Serve invocations until stopped; returns the process exit code."""
    die_with_parent()
    init = wire.receive(read_fd)
    if init is None:
        return 0
    try:
        model = load_model(init)
    except Exception as exc:
        return load_failed(write_fd, exc)
    return serve_jobs(read_fd, write_fd, int(init["worker"]), model, float(init.get("spawned_at", time.time())))


def load_model(init: dict[str, Any]) -> LoadedModel:
    """Load the model an ``init`` message names, and what its first batch would otherwise import."""
    ref = ModelRef(**init["model"])
    storage.configure(ref.storage_options, filter(None, (ref.uri, ref.state_dict)))  # before the job's task arrives
    model = load_warm(ref)
    batch_format = init.get("batch_format", "auto")
    _preload(model.batch_format if batch_format == "auto" else batch_format)
    return model


def serve_jobs(read_fd: int, write_fd: int, worker: int, model: LoadedModel, started_at: float) -> int:
    """Report ready (``init_s`` counted from ``started_at``), then serve tasks and invocations until stopped."""
    init_s = max(0.0, time.time() - started_at)
    wire.send(write_fd, {"type": "ready", "pid": os.getpid(), "init_s": init_s})
    task: JobTask | None = None
    steps: Steps | None = None
    while True:
        message = wire.receive(read_fd)
        if message is None or message["type"] == "stop":
            return 0
        if message["type"] == "task":
            task = JobTask.from_json(message["task"])
            storage.configure(task.storage_options, task.locations)
            try:
                steps = Steps.for_task(task, model)
            except Exception as exc:
                return load_failed(write_fd, exc)
            continue
        assert task is not None and steps is not None, "an invocation arrived before the job's task"
        chunk = Chunk.from_json(message["chunk"])
        report = invoke(task, chunk, int(message["attempt"]), worker, steps, message.get("output_schema"))
        wire.send(write_fd, {"type": "report", "report": report.to_dict()})


def die_with_parent(parent: int | None = None) -> None:
    """On Linux, have the kernel kill this process when its parent dies, so no orphan writes late files.

    ``parent`` (default: ``$SQUALL_PARENT_PID``) is the pid the parent had; if
    it is already gone, exit now. Comparing with that pid, not with 1, keeps a
    coordinator that is itself pid 1 (a container's entry point) working.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import resource
    import signal

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crashing model must not fill the disk with cores
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    expected = parent or int(os.environ.get("SQUALL_PARENT_PID", "0"))
    if expected and os.getppid() != expected:
        os._exit(0)


def load_failed(write_fd: int, exc: BaseException) -> int:
    """Tell the coordinator the model cannot be loaded; returns the exit code."""
    error = ErrorInfo.from_exception(exc, traceback.format_exc())
    wire.send(write_fd, {"type": "load_failed", "error": error.__dict__})
    return 3


def _preload(batch_format: str) -> Any:
    """Import what the first batch would otherwise import, so it counts as cold start, not invocation time."""
    if batch_format == "pandas":
        import pandas

        return pandas
    return None


if __name__ == "__main__":
    sys.exit(serve(int(sys.argv[1]), int(sys.argv[2])))
