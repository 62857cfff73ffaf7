"""Running dispatches in this process: what ``squall worker`` and the Lambda handler both do with a message.

A :class:`Consumer` is one warm function instance per job task it has seen,
sharing the loaded model between tasks that name the same model: the
first dispatch of a model loads it (the cold start, reported as ``init_s``
in that invocation's report), later ones find it warm. It runs the same
invocation code as every other backend (:class:`~squall.runtime.instance.WarmInstance`)
and holds no job state: a consumer killed at any moment loses nothing.
"""

from __future__ import annotations

import json
import os
import socket
import time
import traceback
from collections import OrderedDict
from dataclasses import asdict, replace

from squall.backends.sqs.envelope import Dispatch, Reply, Started
from squall.backends.sqs.queues import Queue
from squall.backends.sqs.task_object import read_task
from squall.errors import ErrorInfo, ModelLoadError
from squall.models.base import LoadedModel
from squall.runtime.instance import WarmInstance, load_model
from squall.runtime.messages import Load, Reported
from squall.runtime.peak_memory import peak_mb
from squall.runtime.task import InvocationReport, JobTask
from squall.states import Outcome

KEPT_TASKS = 8


class Consumer:
    """Runs dispatches one at a time, models kept warm between them (see the module docstring)."""

    def __init__(self, name: str | None = None, region: str | None = None) -> None:
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self._region = region
        self._models: dict[str, LoadedModel] = {}
        self._instances: OrderedDict[str, WarmInstance] = OrderedDict()
        self._queues: dict[str, Queue] = {}

    def run(self, dispatch: Dispatch) -> Reply:
        """Run ``dispatch`` and send its report to its results queue; returns the reply sent.

        Raises :class:`~squall.errors.MessageRefused` (before running anything) for a dispatch whose job task
        this worker cannot read."""
        task = self._task(dispatch)
        replies = self._queue(dispatch.reply_to)
        replies.send(Started.of(dispatch).to_json())
        reply = self.invoke(dispatch, task)
        replies.send(reply.to_json())
        return reply

    def invoke(self, dispatch: Dispatch, task: JobTask) -> Reply:
        """Run ``dispatch`` of ``task``; a model that cannot be loaded is reported as a failed invocation that is
        not retried."""
        started = time.perf_counter()
        try:
            instance, cold = self._instance(dispatch.task, task)
        except Exception as exc:
            return Reply(dispatch.slot, Reported(_load_failed(dispatch, exc, time.perf_counter() - started)), self.name)
        init_s = time.perf_counter() - started if cold else None
        report = replace(instance.invoke(dispatch.invoke), worker=dispatch.slot, init_s=init_s)
        return Reply(dispatch.slot, Reported(report, peak_mb()), self.name)

    def _task(self, dispatch: Dispatch) -> JobTask:
        instance = self._instances.get(dispatch.task)
        if instance is not None and instance.task is not None:
            self._instances.move_to_end(dispatch.task)
            return instance.task
        return read_task(dispatch.task, dispatch.job_id)

    def _instance(self, uri: str, task: JobTask) -> tuple[WarmInstance, bool]:
        """The configured instance for the task at ``uri``, and whether its model was loaded just now."""
        instance = self._instances.get(uri)
        if instance is not None:
            return instance, False
        key = json.dumps(asdict(task.model), sort_keys=True)
        cold = key not in self._models
        if cold:
            self._models[key] = load_model(Load(0, task.model, task.batch_format))
        instance = WarmInstance(0, self._models[key])
        instance.configure(task)
        self._instances[uri] = instance
        while len(self._instances) > KEPT_TASKS:
            self._instances.popitem(last=False)
        return instance, cold

    def _queue(self, url: str) -> Queue:
        if url not in self._queues:
            self._queues[url] = Queue.named(url, self._region)
        return self._queues[url]


def _load_failed(dispatch: Dispatch, exc: BaseException, seconds: float) -> InvocationReport:
    """A model or task this worker cannot load: every attempt would fail the same way, so no retry."""
    error = ModelLoadError(f"the worker {socket.gethostname()} could not load the job's model: {type(exc).__name__}: {exc}")
    return InvocationReport(
        job_id=dispatch.job_id, chunk_id=dispatch.invoke.chunk.chunk_id, attempt=dispatch.invoke.attempt,
        worker=dispatch.slot, outcome=Outcome.ERROR, started_at=time.time() - seconds, duration_s=seconds,
        error=ErrorInfo.from_exception(error, traceback.format_exc()), retryable=False,
    )
