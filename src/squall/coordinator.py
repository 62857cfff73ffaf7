"""The coordinator: dispatch chunks to warm workers, enforce deadlines, commit winners, retry, dead-letter, finalize.

It is the only writer of job state. One loop: hand every idle worker a
claimed chunk, wait for worker events (or the nearest deadline), react to
each, repeat until nothing is pending or leased. Listeners see every event.
"""

from __future__ import annotations

import heapq
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

from squall.backends.base import (
    Backend, InvocationDone, InvocationStarted, WorkerDied, WorkerEvent, WorkerLoadFailed, WorkerReady,
)
from squall.errors import EnvironmentFault, JobCancelled, ModelLoadError, environment_cause, stopped_by_environment
from squall.io.output import Committed, open_output
from squall.io.output_schema import schema_from_text
from squall.io.part_formats import extension_of
from squall.invocations import InvocationRecord
from squall.io.storage import is_transient
from squall.observe.events import JobListener
from squall.plan.chunk import Chunk
from squall.plan.split import can_split, split_chunk
from squall.limits import JobLimits
from squall.runtime.task import InvocationReport, JobTask
from squall.store import Claim, JobStore
from squall.states import ChunkState, JobState, Outcome

_IDLE_WAIT_S = 0.5
_START_FAILURES_PER_WORKER = 3


@dataclass
class _Lease:
    claim: Claim
    deadline: float
    init_s: float | None = None  # the worker's start-up time, when this is its first invocation

    @property
    def chunk(self) -> Chunk:
        return self.claim.chunk

    @property
    def attempt(self) -> int:
        return self.claim.attempt


class Coordinator:
    """Runs one job's queue to completion on a backend."""

    def __init__(
        self,
        store: JobStore,
        backend: Backend,
        task: JobTask,
        workers: int,
        limits: JobLimits,
        listeners: Sequence[JobListener] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._backend = backend
        self._task = task
        self._workers = workers
        self._limits = limits
        self._listeners = list(listeners)
        self._clock = clock
        self._output = open_output(task.output)
        self._leases: dict[int, _Lease] = {}
        self._outstanding = 0
        self._invocations = 0
        self._start_failures = 0
        self._last_cancel_check = 0.0
        self._retry_times: list[float] = []
        self._in_turn = False
        self._notices: list[Callable[[JobListener], None]] = []
        self._init_s: dict[int, float] = {}  # start-up time of ready workers that have not run an invocation yet
        self._output_schema = store.output_schema(task.job_id)  # fixed by the job's first committed part
        self._commit_pool: ThreadPoolExecutor | None = None
        self._ahead: dict[tuple[int, int], Future[tuple[Committed | None, Committed | None]]] = {}

    def drive(self) -> None:
        """Run every pending chunk on the (started, configured) backend until each is done or dead.

        Raises :class:`ModelLoadError` if the workers cannot load the model.
        """
        job_id = self._task.job_id
        counts = self._store.counts(job_id)
        self._outstanding = counts.count(ChunkState.PENDING) + counts.count(ChunkState.LEASED)
        earliest = self._store.next_retry_at(job_id)
        self._retry_times = [earliest] if earliest else []
        for listener in self._listeners:
            listener.job_started(job_id, sum(counts.by_state.values()), counts.count(ChunkState.DONE), self._store.job(job_id).est_rows)
        self._store.set_job_state(job_id, JobState.RUNNING)
        events: list[WorkerEvent] = []
        try:
            while True:
                with self._turn():  # what the events changed, then the next leases
                    self._commit_ahead(events)
                    for event in events:
                        self._handle(event)
                    self._enforce_deadlines()
                    if self._outstanding <= 0:
                        break
                    self._check_cancel()
                    claimed = self._lease_idle_workers()
                self._submit(claimed)  # after the leases are committed, so no attempt number is ever handed out twice
                self._backend.scale(self._outstanding - len(self._leases))
                events = self._backend.wait(self._wait_time())
        finally:
            if self._commit_pool is not None:
                self._commit_pool.shutdown(wait=True)  # no copy may land after the job's state is decided
            self._store.add_starts(job_id, self._backend.cold_starts(), self._backend.worker_starts())

    @property
    def invocations(self) -> int:
        return self._invocations

    def _lease_idle_workers(self) -> list[tuple[int, Claim, float | None]]:
        """Claim a chunk for each idle worker, while there are chunks that may run now."""
        claimed: list[tuple[int, Claim, float | None]] = []
        for worker in self._backend.idle():
            if worker in self._leases:
                continue
            init_s = self._init_s.pop(worker, None)
            claim = self._store.claim(self._task.job_id, worker, init_s=init_s)
            if claim is None:
                if init_s is not None:
                    self._init_s[worker] = init_s
                break
            claimed.append((worker, claim, init_s))
        return claimed

    def _submit(self, claimed: list[tuple[int, Claim, float | None]]) -> None:
        """Send each claimed chunk to its worker; its time limit starts now, not when it was claimed (the
        commit in between is the coordinator's time, not the invocation's)."""
        for worker, claim, init_s in claimed:
            lease = _Lease(claim, self._limits.deadline(claim.lane, self._clock()), init_s)
            self._leases[worker] = lease
            self._backend.submit(worker, lease.chunk, lease.attempt, self._output_schema)
            self._invocations += 1
            for listener in self._listeners:
                listener.invocation_started(self._task.job_id, lease.chunk.chunk_id, lease.attempt, worker)

    def _check_cancel(self) -> None:
        now = self._clock()
        if now - self._last_cancel_check < _IDLE_WAIT_S:
            return
        self._last_cancel_check = now
        if self._store.cancel_requested(self._task.job_id):
            raise JobCancelled(f"job {self._task.job_id} was cancelled; committed parts are kept")

    def _wait_time(self) -> float:
        now = self._clock()
        candidates = [_IDLE_WAIT_S] + [lease.deadline - now for lease in self._leases.values()]
        wall = time.time()  # retry times are wall-clock times, as stored
        while self._retry_times and self._retry_times[0] <= wall:
            heapq.heappop(self._retry_times)
        if self._retry_times and len(self._leases) < self._workers:
            candidates.append(self._retry_times[0] - wall)
        return max(0.0, min(candidates))

    def _handle(self, event: object) -> None:
        if isinstance(event, WorkerReady):
            self._init_s[event.worker] = event.init_s
            self._tell(lambda listener: listener.worker_ready(event.worker, event.init_s))
        elif isinstance(event, InvocationStarted):
            lease = self._leases.get(event.worker)
            if lease is not None:  # it waited on a queue for a consumer: its time limit starts now
                lease.deadline = self._limits.deadline(lease.claim.lane, self._clock())
        elif isinstance(event, InvocationDone):
            self._start_failures = 0
            self._on_report(event.worker, event.report)
        elif isinstance(event, WorkerDied):
            self._on_worker_died(event.worker, event.reason, event.cause)
        elif isinstance(event, WorkerLoadFailed):
            raise ModelLoadError(f"the model could not be loaded: {event.error}")

    def _on_report(self, worker: int, report: InvocationReport) -> None:
        lease = self._lease_of(worker, report)
        if lease is None:
            if not self._leased(report.chunk_id, report.attempt):
                self._discard(report)  # a late or duplicate delivery; never a live attempt's file
            self._notify(report, committed=False)
            return
        del self._leases[worker]
        if report.environment_fault:
            self._stop_for_environment(lease, report)
        mismatch = self._schema_mismatch(report) if report.outcome == Outcome.OK else None
        if report.outcome == Outcome.OK and mismatch is None:
            self._commit(report)
            self._notify(report, committed=True)
            self._notify_committed(lease, report)
            return
        if mismatch is not None:  # two first parts raced: no chunk's fault; the retry is sent the job's schema
            self._discard(report)
            self._notify(report, committed=False)
            self._store.release_attempt(self._task.job_id, lease.chunk.chunk_id, lease.attempt, mismatch, report)
            self._notify_failed(lease, Outcome.ERROR, mismatch, dead=False)
        else:
            self._discard(report)
            self._notify(report, committed=False)
            error = str(report.error) if report.error else "unknown error"
            retryable = report.retryable and not (report.error and report.error.type in self._limits.retry.no_retry_on)
            self._fail(lease, Outcome.ERROR, error, retryable, report)
        self._notify_closed(lease)

    def _schema_mismatch(self, report: InvocationReport) -> str | None:
        """Why the report's part cannot join the job's output (its schema is not the job's), or ``None``."""
        if self._output_schema is None or report.part_schema is None or report.part_schema == self._output_schema:
            return None
        job, part = schema_from_text(self._output_schema), schema_from_text(report.part_schema)
        if part.equals(job):
            return None
        shown = [schema.to_string().replace("\n", ", ") for schema in (part, job)]
        return f"the part's schema ({shown[0]}) is not the job's output schema ({shown[1]}); retried in the job's schema"

    def _stop_for_environment(self, lease: _Lease, report: InvocationReport) -> None:
        """A full or read-only output is no chunk's fault: put the chunk back at no cost and stop the job."""
        error = report.error.message if report.error else "the output refused a write"
        self._store.release_attempt(self._task.job_id, lease.chunk.chunk_id, lease.attempt, error, report)
        self._notify(report, committed=False)
        self._notify_closed(lease)
        with suppress(EnvironmentFault):  # a read-only output keeps the attempt's file; finalize removes it
            self._discard_attempt(lease)
        raise stopped_by_environment(error, self._task.job_id)

    def _leased(self, chunk_id: int, attempt: int) -> bool:
        return any(l.chunk.chunk_id == chunk_id and l.attempt == attempt for l in self._leases.values())

    @contextmanager
    def _changing_output(self) -> Iterator[None]:
        """A full or read-only output, or a store that keeps failing, while committing or discarding is no
        chunk's fault: it stops the job."""
        try:
            yield
        except Exception as exc:
            if environment_cause(exc) is None and not is_transient(exc):
                raise
            raise stopped_by_environment(f"{exc} (output {self._task.output})", self._task.job_id) from exc

    def _commit_ahead(self, events: list[WorkerEvent]) -> None:
        """Start committing the files of every winning report among ``events`` at once, where the output
        allows (an object store's copies each wait on the store); :meth:`_commit` then takes the result.
        Only once the job's schema is fixed: a first part could still turn a later one into a mismatch."""
        if self._output.concurrent_commits <= 1 or self._output_schema is None:
            return
        winners = [e.report for e in events if isinstance(e, InvocationDone) and self._wins(e.worker, e.report)]
        if len(winners) < 2:
            return
        if self._commit_pool is None:
            self._commit_pool = ThreadPoolExecutor(self._output.concurrent_commits, thread_name_prefix="squall-commit")
        for report in winners:
            key = (report.chunk_id, report.attempt)
            if key not in self._ahead:  # a report delivered twice in one batch is committed once
                self._ahead[key] = self._commit_pool.submit(self._commit_files, report)

    def _wins(self, worker: int, report: InvocationReport) -> bool:
        """Whether :meth:`_on_report` will commit ``report``: the attempt leased to ``worker``, successful."""
        return (
            self._lease_of(worker, report) is not None and report.outcome == Outcome.OK
            and not report.environment_fault and self._schema_mismatch(report) is None
        )

    def _lease_of(self, worker: int, report: InvocationReport) -> _Lease | None:
        """``worker``'s lease, if ``report`` is of the attempt it holds (else the report is late or a duplicate)."""
        lease = self._leases.get(worker)
        if lease is None or lease.chunk.chunk_id != report.chunk_id or lease.attempt != report.attempt:
            return None
        return lease

    def _commit_files(self, report: InvocationReport) -> tuple[Committed | None, Committed | None]:
        """Commit the report's part and error part under their chunk's names."""
        ext = extension_of(self._task.output_format)
        part = error_part = None
        if report.part:
            part = self._output.commit(report.part, self._output.committed_part(report.chunk_id, ext, self._task.part_prefix))
        if report.error_part:
            final = self._output.committed_errors(report.chunk_id, self._task.part_prefix)
            error_part = self._output.commit(report.error_part, final)
        return part, error_part

    def _commit(self, report: InvocationReport) -> None:
        ahead = self._ahead.pop((report.chunk_id, report.attempt), None)
        with self._changing_output():
            part, error_part = ahead.result() if ahead is not None else self._commit_files(report)
        fixes_schema = report.part_schema if self._output_schema is None else None
        self._store.complete(report, part, error_part, fixes_schema)  # the committed counts, which finalize reconciles
        self._output_schema = self._output_schema or fixes_schema
        self._outstanding -= 1

    def _discard(self, report: InvocationReport) -> None:
        with self._changing_output():
            self._output.discard(report.part)
            self._output.discard(report.error_part)

    def _on_worker_died(self, worker: int, reason: str, cause: str) -> None:
        """A worker that held a chunk crashed on it (its fault counts towards splitting); one that held none
        died starting or idle, which is no chunk's fault."""
        lease = self._leases.pop(worker, None)
        self._init_s.pop(worker, None)
        if lease is None:
            self._count_start_failure(reason)
            return
        self._discard_attempt(lease)
        self._killed(lease, Outcome.MEMORY if cause == Outcome.MEMORY else Outcome.LOST, reason)
        self._notify_closed(lease)

    def _count_start_failure(self, reason: str) -> None:
        """Workers that die holding no chunk, one after another with no invocation finishing in between,
        will not get better by retrying (a model that crashes its process on load or on the job's task)."""
        self._start_failures += 1
        if self._start_failures >= _START_FAILURES_PER_WORKER * self._workers:
            raise ModelLoadError(f"workers keep dying while starting ({reason}); see the worker logs in the state folder")

    def _enforce_deadlines(self) -> None:
        now = self._clock()
        for worker, lease in list(self._leases.items()):
            if lease.deadline <= now:
                del self._leases[worker]
                self._backend.kill(worker)
                self._discard_attempt(lease)
                limit = self._limits.timeout if lease.claim.lane == "function" else self._limits.batch_lane_timeout
                self._killed(lease, Outcome.TIMEOUT, f"the invocation ran past the {limit:g} s time limit")
                self._notify_closed(lease)

    def _killed(self, lease: _Lease, outcome: str, error: str) -> None:
        """A timeout, memory kill or crash: split the chunk once that happened ``split_after`` times
        (a row that crashes the process is isolated this way, as bisection isolates rows that raise),
        else hand it to the batch lane if it cannot be split, else retry as any failure."""
        limits, claim = self._limits, lease.claim
        if claim.kills + 1 >= limits.split_after and claim.lane == "function":
            if can_split(claim.chunk, limits.min_chunk_rows):
                self._split(lease, f"{outcome}: {error}")
                return
            if limits.batch_lane:
                self._store.to_batch_lane(self._task.job_id, claim.chunk.chunk_id, claim.attempt, f"{outcome}: {error}")
                self._notify_failed(lease, outcome, f"{error}; moved to the batch lane", dead=False)
                return
            self._fail(lease, outcome, f"{error}; the chunk cannot be split below min_chunk_rows", False, None)
            return
        self._fail(lease, outcome, error, True, None)

    def _split(self, lease: _Lease, error: str) -> None:
        job_id = self._task.job_id
        first = self._store.next_chunk_id(job_id)
        children = split_chunk(lease.chunk, first, first + 1)
        self._store.split(job_id, lease.chunk.chunk_id, lease.attempt, error, children)
        self._outstanding += 1
        self._notify_failed(lease, Outcome.SPLIT, f"{error}; split into chunks {first} and {first + 1}", dead=False)

    def _discard_attempt(self, lease: _Lease) -> None:
        ext = extension_of(self._task.output_format)
        chunk_id, prefix = lease.chunk.chunk_id, self._task.part_prefix
        with self._changing_output():
            self._output.discard(self._output.attempt_part(chunk_id, lease.attempt, ext, prefix))
            self._output.discard(self._output.attempt_errors(chunk_id, lease.attempt, prefix))

    def _fail(self, lease: _Lease, outcome: str, error: str, retryable: bool, report: InvocationReport | None) -> None:
        policy = self._limits.retry
        failures = lease.claim.attempts_since_redrive
        retry = policy.should_retry(failures, retryable)
        retry_at = time.time() + policy.delay(failures) if retry else None
        if retry_at is not None:
            heapq.heappush(self._retry_times, retry_at)
        self._store.fail(self._task.job_id, lease.chunk.chunk_id, lease.attempt, outcome, error, retry_at, report)
        if not retry:
            self._outstanding -= 1
        self._notify_failed(lease, outcome, error, dead=not retry)

    def _notify_failed(self, lease: _Lease, outcome: str, error: str, dead: bool) -> None:
        job_id, chunk_id, attempt = self._task.job_id, lease.chunk.chunk_id, lease.attempt
        self._tell(lambda listener: listener.chunk_failed(job_id, chunk_id, attempt, outcome, error, dead))

    def _notify_closed(self, lease: _Lease) -> None:
        """Tell listeners how a leased invocation ended, as the store recorded it."""
        if not self._listeners:
            return
        for record in self._store.invocations(self._task.job_id, lease.chunk.chunk_id, lease.attempt):
            self._tell(_closed(record))

    def _notify_committed(self, lease: _Lease, report: InvocationReport) -> None:
        """Tell listeners how a committed invocation ended: as the store recorded it, from the report in hand."""
        self._tell(_closed(InvocationRecord.of_report(report, Outcome.OK, lease.init_s)))

    def _notify(self, report: InvocationReport, committed: bool) -> None:
        self._tell(lambda listener: listener.invocation_finished(report, committed))

    def _tell(self, notice: Callable[[JobListener], None]) -> None:
        """Give every listener ``notice``: at once, or, during a turn, once the turn's changes are committed
        (so a listener that reads the store finds what it was told)."""
        if self._in_turn:
            self._notices.append(notice)
            return
        for listener in self._listeners:
            notice(listener)

    @contextmanager
    def _turn(self) -> Iterator[None]:
        """One transaction for the changes of one turn of the loop; listeners hear of them after it commits."""
        self._in_turn = True
        try:
            with self._store.batch():
                yield
        finally:
            self._in_turn = False
            notices, self._notices = self._notices, []
            for notice in notices:
                self._tell(notice)


def _closed(record: InvocationRecord) -> Callable[[JobListener], None]:
    return lambda listener: listener.invocation_closed(record)


__all__ = ["Coordinator"]
