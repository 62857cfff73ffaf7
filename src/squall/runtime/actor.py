"""The worker as a Ray actor: the same warm function instance as :mod:`squall.runtime.worker`, spoken to by actor calls.

One actor loads the model once (``load``), receives the job's task once
(``configure``), then serves invocations one at a time (``invoke``): each
call carries a chunk descriptor and returns a report; the chunk's rows are
read from, and its part written to, storage by the actor itself, so no data
passes through the driver.

The memory limit is enforced here, in the actor's own process, because the
driver may be on another machine: ``invoke`` runs the invocation on a thread
and samples the resident memory of the process tree every 100 ms; over the
limit it answers at once with the amount used, and the backend kills the
actor (the runaway thread dies with it).
"""

from __future__ import annotations

import os
import threading
import time
import traceback
from typing import Any

from squall.backends.local import THREAD_VARIABLES
from squall.errors import ErrorInfo
from squall.io import storage
from squall.models.base import LoadedModel
from squall.plan.chunk import Chunk
from squall.runtime.invocation import Steps, invoke
from squall.runtime.peak_memory import tree_rss_mb
from squall.runtime.task import JobTask
from squall.runtime.worker import load_model

MEMORY_CHECK_S = 0.1


class ActorWorker:
    """A warm worker living in a Ray actor; every method returns plain data (no exception crosses the call)."""

    def __init__(self, worker: int, threads: int) -> None:
        for name in THREAD_VARIABLES:
            os.environ[name] = str(threads)
        self._worker = worker
        self._model: LoadedModel | None = None
        self._task: JobTask | None = None
        self._steps: Steps | None = None

    def load(self, init: dict[str, Any]) -> dict[str, Any]:
        """Load the model; answers ``{"ready": init_s, "pid"}`` or ``{"load_failed": ErrorInfo fields}``."""
        started = time.time()
        try:
            self._model = load_model(init)
        except Exception as exc:
            return {"load_failed": ErrorInfo.from_exception(exc, traceback.format_exc()).__dict__}
        return {"ready": max(0.0, time.time() - float(init.get("spawned_at", started))), "pid": os.getpid()}

    def configure(self, task_json: str) -> dict[str, Any] | None:
        """Take the job's task; answers ``None``, or ``{"load_failed": …}`` when the model cannot serve it."""
        assert self._model is not None, "configure before load"
        task = JobTask.from_json(task_json)
        try:
            storage.configure(task.storage_options, task.locations)
            self._steps = Steps.for_task(task, self._model)
        except Exception as exc:
            return {"load_failed": ErrorInfo.from_exception(exc, traceback.format_exc()).__dict__}
        self._task = task
        return None

    def lifeline(self) -> None:
        """Never answers while the actor lives: the driver learns of its death, even idle, when this call fails.
        Runs in its own concurrency group, beside the one-at-a-time calls above."""
        while True:
            time.sleep(3600)

    def invoke(self, chunk_json: str, attempt: int, memory_mb: int | None, output_schema: str | None = None) -> dict[str, Any]:
        """Run one invocation (its part cast to ``output_schema``, the job's, when known); answers ``{"report": …,
        "rss_mb"}``, ``{"memory_mb": used}`` over ``memory_mb``, or ``{"crashed": ErrorInfo fields}`` when the
        invocation died the way a worker process would (``SystemExit``)."""
        assert self._task is not None and self._steps is not None, "an invocation arrived before the job's task"
        task, steps = self._task, self._steps
        answer: dict[str, Any] = {}

        def run() -> None:
            try:
                chunk = Chunk.from_json(chunk_json)
                answer["report"] = invoke(task, chunk, attempt, self._worker, steps, output_schema).to_dict()
            except BaseException as exc:  # noqa: BLE001 - what would end a worker process (SystemExit...) ends this call
                answer["crashed"] = ErrorInfo.from_exception(exc, traceback.format_exc()).__dict__

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        while thread.is_alive():
            thread.join(MEMORY_CHECK_S)
            if memory_mb is not None and thread.is_alive():
                used = tree_rss_mb(os.getpid())
                if used > memory_mb:
                    return {"memory_mb": used}
        return {**answer, "rss_mb": tree_rss_mb(os.getpid())}

