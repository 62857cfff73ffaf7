"""An in-process :class:`~squall.backends.base.Backend` for coordinator tests, as dramatiq's ``StubBroker`` is for its workers.

Each worker is a real :class:`~squall.runtime.instance.WarmInstance` on the
real model, in this process: an invocation runs synchronously, reads its
chunk and writes its part under its attempt name, and its report is an event
of the next :meth:`StubBackend.wait`. Nothing is faked but the transport, so
what a job writes through it is what the model predicts.

A test scripts what goes wrong, attempt by attempt (``chunk_id``, ``attempt``):
hold a report back (until released, or until another attempt reported: a
late report), deliver it twice, make the worker die with a cause, make the
attempt hang until the coordinator kills its worker, make it fail with an
error, or make fresh workers die while starting. What happened is recorded:
``submitted``, ``killed``, ``delivered``, ``lost``.
"""

from __future__ import annotations

import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from typing import Sequence

from squall.backends.base import InvocationDone, WorkerDied, WorkerEvent, WorkerLoadFailed, WorkerReady
from squall.errors import ErrorInfo, is_retryable
from squall.models.base import LoadedModel, ModelRef
from squall.plan.chunk import Chunk
from squall.runtime.instance import WarmInstance, load_model
from squall.runtime.messages import Invoke, Load
from squall.runtime.task import InvocationReport, JobTask
from squall.states import Outcome

Attempt = tuple[int, int]
"""(chunk_id, attempt)."""


@dataclass(frozen=True)
class Submission:
    """One :meth:`StubBackend.submit` call."""

    worker: int
    chunk_id: int
    attempt: int
    output_schema: str | None
    at: float
    """Wall-clock time (``time.time()``, as the store's retry times are)."""


@dataclass
class _Script:
    hold: bool = False
    until: Attempt | None = None
    seconds: float | None = None
    times: int = 1
    die: str | None = None
    hang: bool = False
    fail: BaseException | None = None


@dataclass
class _Worker:
    index: int
    generation: int
    instance: WarmInstance | None
    starting: bool = False  # it loads the model at the next wait()
    announced: bool = False  # its WorkerReady was delivered
    busy: bool = False


@dataclass
class _Held:
    worker: int
    generation: int
    message: Invoke
    instance: WarmInstance
    times: int
    until: Attempt | None
    due: float | None  # time.monotonic() at which it is released


@dataclass
class _Pending:
    event: WorkerEvent
    generation: int  # of the worker it is from or about
    always: bool = False  # delivered even when that worker was replaced since (a death, a late report)


@dataclass
class StubBackend:
    """Workers in this process, scripted per attempt (see the module docstring).

    ``starting_deaths`` fresh workers die before they are ready (a model whose process crashes on load).
    """

    starting_deaths: int = 0
    batch_format: str = "auto"
    submitted: list[Submission] = field(default_factory=list)
    killed: list[int] = field(default_factory=list)
    delivered: list[InvocationReport] = field(default_factory=list)
    lost: list[InvocationReport] = field(default_factory=list)
    """Reports that never arrived because their worker died (what it had written stays behind)."""

    def __post_init__(self) -> None:
        self._scripts: dict[Attempt, _Script] = {}
        self._workers: dict[int, _Worker] = {}
        self._events: deque[_Pending] = deque()
        self._held: dict[Attempt, _Held] = {}
        self._ref: ModelRef | None = None
        self._model: LoadedModel | None = None
        self._load_error: ErrorInfo | None = None
        self._task: JobTask | None = None
        self._starts = 0
        self._closed = False

    # --- scripting -------------------------------------------------------------------------

    def hold(self, chunk_id: int, attempt: int, until: Attempt | None = None, seconds: float | None = None) -> None:
        """Keep that attempt back: it runs, and reports, only once released (:meth:`release`); with ``until``, once
        that other attempt's report was delivered (a late report: it arrives even if its worker was killed
        meanwhile); with ``seconds``, once that long has passed since it was submitted (a long invocation)."""
        self._scripts[(chunk_id, attempt)] = _Script(hold=True, until=until, seconds=seconds)

    def duplicate(self, chunk_id: int, attempt: int, times: int = 2) -> None:
        """Deliver that attempt's report ``times`` times (an at-least-once transport)."""
        self._scripts[(chunk_id, attempt)] = _Script(times=times)

    def die(self, chunk_id: int, attempt: int, cause: str = "crash") -> None:
        """The worker running that attempt dies with ``cause`` (``crash`` or ``memory``) once it has written its
        part, before it reports (as a process killed then leaves its file); a fresh worker takes its place."""
        self._scripts[(chunk_id, attempt)] = _Script(die=cause)

    def hang(self, chunk_id: int, attempt: int) -> None:
        """That attempt never reports: its worker stays busy until it is killed (:meth:`kill`)."""
        self._scripts[(chunk_id, attempt)] = _Script(hang=True)

    def fail(self, chunk_id: int, attempt: int, error: BaseException) -> None:
        """That attempt's invocation raises ``error`` before reading: it reports the error, as an instance does."""
        self._scripts[(chunk_id, attempt)] = _Script(fail=error)

    def release(self, chunk_id: int, attempt: int) -> None:
        """Run a held attempt now; its report arrives with the next :meth:`wait`."""
        held = self._held.pop((chunk_id, attempt))
        report = held.instance.invoke(held.message)
        for _ in range(held.times):
            self._events.append(_Pending(InvocationDone(held.worker, report), held.generation, always=True))

    def held(self) -> list[Attempt]:
        """The attempts held back now."""
        return list(self._held)

    # --- the Backend protocol --------------------------------------------------------------

    def start(self, model: ModelRef, workers: int) -> None:
        """Start ``workers`` workers; the model is loaded here (once: the workers share it) on the first
        :meth:`wait`, where each worker's start-up ends."""
        self._ref = model
        for index in range(workers):
            self._launch(index)

    def configure(self, task: JobTask) -> None:
        self._task = task
        for worker in self._workers.values():
            self._configure(worker)

    def idle(self) -> list[int]:
        if self._task is None:
            return []
        return [w.index for w in self._workers.values() if w.announced and not w.busy and w.instance is not None]

    def check_reach(self, files: Sequence[tuple[str, int | None]], output: str) -> None:
        """The workers are this process: they reach what it reaches."""

    def submit(self, worker: int, chunk: Chunk, attempt: int, output_schema: str | None = None) -> None:
        slot = self._workers[worker]
        assert slot.instance is not None and slot.announced and not slot.busy, f"worker {worker} is not idle"
        slot.busy = True
        self.submitted.append(Submission(worker, chunk.chunk_id, attempt, output_schema, time.time()))
        message = Invoke(chunk, attempt, output_schema)
        script = self._scripts.get((chunk.chunk_id, attempt), _Script())
        if script.hang:
            return
        if script.hold:
            due = None if script.seconds is None else time.monotonic() + script.seconds
            self._held[(chunk.chunk_id, attempt)] = _Held(
                worker, slot.generation, message, slot.instance, script.times, script.until, due
            )
            return
        if script.fail is not None:
            report = _failed(chunk, attempt, worker, self._task, script.fail)
        else:
            report = slot.instance.invoke(message)
        if script.die is not None:
            self.lost.append(report)
            self._replace(slot, WorkerDied(worker, f"the stub worker died ({script.die})", script.die))
            return
        for _ in range(script.times):
            self._events.append(_Pending(InvocationDone(worker, report), slot.generation))

    def scale(self, waiting: int) -> None:
        """The stub pool keeps its size."""

    def wait(self, timeout: float) -> list[WorkerEvent]:
        """The events queued so far; with none, sleep ``timeout`` (a hung attempt waits for its deadline)."""
        self._finish_starts()
        due = [held.due for held in self._held.values() if held.due is not None]
        if not self._events:
            time.sleep(max(0.0, min([timeout, *(at - time.monotonic() for at in due)])))
        for attempt in [a for a, held in self._held.items() if held.due is not None and held.due <= time.monotonic()]:
            self.release(*attempt)
        queued, self._events = self._events, deque()
        events: list[WorkerEvent] = []
        for pending in queued:
            worker = self._workers.get(pending.event.worker)
            current = worker is not None and worker.generation == pending.generation
            if current or pending.always:
                events.append(pending.event)
                self._settle(pending.event, worker if current else None)
        return events

    def kill(self, worker: int) -> None:
        """End ``worker`` at once and start another: its hung or held attempt never reports, unless it was held
        ``until`` another attempt reported (a late report, scripted)."""
        self.killed.append(worker)
        slot = self._workers.get(worker)
        if slot is None:
            return
        for attempt, held in list(self._held.items()):
            if (held.worker, held.generation) == (worker, slot.generation) and held.until is None:
                del self._held[attempt]
        self._replace(slot, None)

    def cold_starts(self) -> int:
        """One model load per worker started, as separate processes would load it."""
        return self._starts

    def worker_starts(self) -> int:
        return self._starts

    def shutdown(self) -> None:
        self._closed = True
        self._workers.clear()
        self._events.clear()

    # --- workers ---------------------------------------------------------------------------

    def _launch(self, index: int, generation: int = 0) -> None:
        self._starts += 1
        self._workers[index] = _Worker(index, generation, None, starting=self.starting_deaths <= 0)
        if self.starting_deaths > 0:
            self.starting_deaths -= 1
            self._events.append(_Pending(WorkerDied(index, "the stub worker died while starting"), generation))

    def _finish_starts(self) -> None:
        """Load the model (the first time) and end the start-up of every starting worker: ready, or failed to load."""
        starting = [worker for worker in self._workers.values() if worker.starting]
        if starting and self._model is None and self._load_error is None:
            assert self._ref is not None
            try:
                self._model = load_model(Load(-1, self._ref, self.batch_format, time.time()))
            except Exception as exc:  # a load failure is an event, as from a worker process
                self._load_error = ErrorInfo.from_exception(exc, traceback.format_exc())
        for worker in starting:
            worker.starting = False
            if self._model is None:
                assert self._load_error is not None
                self._events.append(_Pending(WorkerLoadFailed(worker.index, self._load_error), worker.generation))
                continue
            worker.instance = WarmInstance(worker.index, self._model)
            self._events.append(_Pending(WorkerReady(worker.index, 0.0), worker.generation))
            self._configure(worker)

    def _configure(self, worker: _Worker) -> None:
        if self._task is None or worker.instance is None:
            return
        try:
            worker.instance.configure(self._task)
        except Exception as exc:  # every worker would fail the same way: a load failure
            worker.instance = None
            self._events.append(_Pending(WorkerLoadFailed(worker.index, ErrorInfo.from_exception(exc)), worker.generation))

    def _replace(self, worker: _Worker, death: WorkerDied | None) -> None:
        if death is not None:
            self._events.append(_Pending(death, worker.generation, always=True))
        self._launch(worker.index, worker.generation + 1)

    def _settle(self, event: WorkerEvent, worker: _Worker | None) -> None:
        """What delivering ``event`` changes for ``worker`` (``None``: the event is from one replaced since): a
        ready worker is announced, a reporting one idle again, one that died while starting replaced; and the
        attempts held until this report are released."""
        if isinstance(event, InvocationDone):
            self.delivered.append(event.report)
            done = (event.report.chunk_id, event.report.attempt)
            for attempt in [a for a, held in self._held.items() if held.until == done]:
                self.release(*attempt)
        if worker is None:
            return
        if isinstance(event, WorkerReady):
            worker.announced = True
        elif isinstance(event, InvocationDone):
            worker.busy = False
        elif isinstance(event, WorkerDied) and worker.instance is None and not worker.starting and not self._closed:
            self._launch(worker.index, worker.generation + 1)  # it died while starting: the next one starts


def _failed(chunk: Chunk, attempt: int, worker: int, task: JobTask | None, error: BaseException) -> InvocationReport:
    """The report of an invocation that raised ``error`` before it read a row, as :func:`squall.runtime.invocation.invoke` makes it."""
    assert task is not None
    return InvocationReport(
        job_id=task.job_id, chunk_id=chunk.chunk_id, attempt=attempt, worker=worker, outcome=Outcome.ERROR,
        started_at=time.time(), error=ErrorInfo.from_exception(error), retryable=is_retryable(error),
    )
