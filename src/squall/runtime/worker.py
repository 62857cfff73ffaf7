"""The worker process: a warm function instance.

It loads the model once (the cold start, timed from process creation), then
serves invocations one at a time until told to stop or its pipe closes. It
never opens the job store: it receives chunk descriptors and returns
reports. Run as ``python -m squall.runtime.worker READ_FD WRITE_FD``.
"""

from __future__ import annotations

import os
import sys
import time
import traceback

from squall.errors import ErrorInfo
from squall.models.registry import load_warm
from squall.plan.chunk import Chunk
from squall.runtime import wire
from squall.runtime.invocation import Steps, invoke
from squall.runtime.task import JobTask


def serve(read_fd: int, write_fd: int) -> int:
    """Serve invocations until stopped; returns the process exit code."""
    init = wire.receive(read_fd)
    if init is None:
        return 0
    worker = int(init["worker"])
    task = JobTask.from_json(init["task"])
    try:
        steps = Steps.for_task(task, load_warm(task.model))
    except Exception as exc:
        wire.send(write_fd, {"type": "load_failed", "error": ErrorInfo.from_exception(exc, traceback.format_exc()).__dict__})
        return 3
    wire.send(write_fd, {"type": "ready", "pid": os.getpid(), "init_s": _seconds_since_start()})
    while True:
        message = wire.receive(read_fd)
        if message is None or message["type"] == "stop":
            return 0
        chunk = Chunk.from_json(message["chunk"])
        report = invoke(task, chunk, int(message["attempt"]), worker, steps)
        wire.send(write_fd, {"type": "report", "report": report.to_dict()})


def _seconds_since_start() -> float:
    import psutil

    return max(0.0, time.time() - psutil.Process().create_time())


if __name__ == "__main__":
    sys.exit(serve(int(sys.argv[1]), int(sys.argv[2])))
