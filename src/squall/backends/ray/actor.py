"""The worker as a Ray actor: a warm function instance (:mod:`squall.runtime.instance`) spoken to by actor calls.

One actor loads the model once (``load``), receives the job's task once
(``configure``), then serves invocations one at a time (``invoke``). Every
call takes and answers :mod:`squall.runtime.messages` records encoded as plain
data, the same records the local backend frames on its pipes. The chunk's rows
are read from, and its part written to, storage by the actor itself, so no
data passes through the driver.

The memory limit is enforced here, in the actor's own process, because the
driver may be on another machine: ``invoke`` runs the invocation on a thread
and samples the resident memory of the process tree every 100 ms; over the
limit it answers :class:`OverMemory` at once, and the backend kills the
actor (the runaway thread dies with it).
"""

from __future__ import annotations

import os
import threading
import time
import traceback
from typing import Any

from squall.errors import ErrorInfo
from squall.runtime.environment import cap_threads_here
from squall.runtime.instance import WarmInstance, load_model
from squall.runtime.messages import (
    Configure, Crashed, Invoke, Load, LoadFailed, Message, OverMemory, Ready, Reported, decode, encode,
)
from squall.runtime.peak_memory import tree_rss_mb

MEMORY_CHECK_S = 0.1


class ActorWorker:
    """A warm worker living in a Ray actor; every method answers an encoded message (no exception crosses the call)."""

    def __init__(self, worker: int, threads: int) -> None:
        cap_threads_here(threads)
        self._worker = worker
        self._instance: WarmInstance | None = None

    def load(self, load: dict[str, Any]) -> dict[str, Any]:
        """Load the model (an encoded :class:`Load`); answers :class:`Ready` or :class:`LoadFailed`."""
        message = decode(load)
        assert isinstance(message, Load)
        started = time.time()
        try:
            self._instance = WarmInstance(self._worker, load_model(message))
        except Exception as exc:
            return encode(LoadFailed(ErrorInfo.from_exception(exc, traceback.format_exc())))
        return encode(Ready(os.getpid(), max(0.0, time.time() - (message.spawned_at or started))))

    def configure(self, configure: dict[str, Any]) -> dict[str, Any] | None:
        """Take the job's task (an encoded :class:`Configure`); answers ``None``, or :class:`LoadFailed` when the
        model cannot serve it."""
        assert self._instance is not None, "configure before load"
        message = decode(configure)
        assert isinstance(message, Configure)
        try:
            self._instance.configure(message.task)
        except Exception as exc:
            return encode(LoadFailed(ErrorInfo.from_exception(exc, traceback.format_exc())))
        return None

    def lifeline(self) -> None:
        """Never answers while the actor lives: the driver learns of its death, even idle, when this call fails.
        Runs in its own concurrency group, beside the one-at-a-time calls above."""
        while True:
            time.sleep(3600)

    def invoke(self, invoke: dict[str, Any], memory_mb: int | None) -> dict[str, Any]:
        """Run one invocation (an encoded :class:`Invoke`); answers :class:`Reported`, :class:`OverMemory` over
        ``memory_mb``, or :class:`Crashed` when the invocation died the way a worker process would (``SystemExit``)."""
        instance = self._instance
        assert instance is not None and instance.task is not None, "an invocation arrived before the job's task"
        message = decode(invoke)
        assert isinstance(message, Invoke)
        answer: list[Message] = []

        def run() -> None:
            try:
                answer.append(Reported(instance.invoke(message)))
            except BaseException as exc:  # noqa: BLE001 - what would end a worker process (SystemExit...) ends this call
                answer.append(Crashed(ErrorInfo.from_exception(exc, traceback.format_exc())))

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        while thread.is_alive():
            thread.join(MEMORY_CHECK_S)
            if memory_mb is not None and thread.is_alive():
                used = tree_rss_mb(os.getpid())
                if used > memory_mb:
                    return encode(OverMemory(used))
        (done,) = answer
        if isinstance(done, Reported):
            done = Reported(done.report, tree_rss_mb(os.getpid()))
        return encode(done)
