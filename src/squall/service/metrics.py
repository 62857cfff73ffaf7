"""The service's Prometheus metrics: every job's metrics (``squall.observe.metrics``) summed over the jobs it
runs, plus service gauges read when scraped.

=====================================  =====  ==============================================
``squall_service_jobs{state}``         gauge  jobs in the state directory by state (QUEUED included)
``squall_service_busy_workers``        gauge  workers given to running jobs (never above ``max_concurrency``)
``squall_service_max_concurrency``     gauge  the configured limit
``squall_service_queue_depth``         gauge  requests waiting for workers
``squall_service_running_jobs``        gauge  jobs running in the pool
``squall_service_warm_workers{model}`` gauge  warm-pool workers loaded and ready, by model
=====================================  =====  ==============================================
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from squall.observe.metrics import JobMetrics
from squall.states import JobState, SubmissionState

if TYPE_CHECKING:
    from squall.result import JobResult
    from squall.invocations import InvocationRecord
    from squall.runtime.task import InvocationReport
    from squall.service.scheduler import Scheduler
    from squall.store import JobStore


class SharedJobMetrics(JobMetrics):
    """:class:`JobMetrics` fed by several jobs at once, from several threads: chunks waiting add up over jobs."""

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__(registry)
        self._lock = threading.Lock()

    def job_started(self, job_id: str, chunks_total: int, chunks_done: int, est_rows: int) -> None:
        with self._lock:
            self._outstanding += chunks_total - chunks_done
            self._update_queue()

    def worker_ready(self, worker: int, init_s: float) -> None:
        with self._lock:
            super().worker_ready(worker, init_s)

    def invocation_started(self, job_id: str, chunk_id: int, attempt: int, worker: int) -> None:
        with self._lock:
            super().invocation_started(job_id, chunk_id, attempt, worker)

    def invocation_finished(self, report: InvocationReport, committed: bool) -> None:
        with self._lock:
            super().invocation_finished(report, committed)

    def invocation_closed(self, record: InvocationRecord) -> None:
        with self._lock:
            super().invocation_closed(record)

    def chunk_failed(self, job_id: str, chunk_id: int, attempt: int, outcome: str, error: str, dead: bool) -> None:
        with self._lock:
            super().chunk_failed(job_id, chunk_id, attempt, outcome, error, dead)

    def job_finished(self, result: JobResult) -> None:
        """Nothing to count: the job's chunks were counted as they finished."""


class ServiceMetrics:
    """The registry ``GET /metrics`` exposes."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.jobs = SharedJobMetrics(self.registry)
        self._by_state = Gauge("squall_service_jobs", "Jobs by state", ["state"], registry=self.registry)
        self._busy = Gauge("squall_service_busy_workers", "Workers given to running jobs", registry=self.registry)
        self._limit = Gauge("squall_service_max_concurrency", "Most workers busy at once", registry=self.registry)
        self._queued = Gauge("squall_service_queue_depth", "Requests waiting for workers", registry=self.registry)
        self._running = Gauge("squall_service_running_jobs", "Jobs running in the pool", registry=self.registry)
        self._warm = Gauge("squall_service_warm_workers", "Warm workers ready, by model", ["model"], registry=self.registry)

    def text(self, scheduler: Scheduler, store: JobStore, max_concurrency: int) -> str:
        """Read the gauges now and return every metric in the Prometheus text format."""
        states: dict[str, int] = {}
        for record in store.recent_jobs(1_000_000):
            states[record.state] = states.get(record.state, 0) + 1
        queued = scheduler.queue.queued()
        states[SubmissionState.QUEUED] = states.get(SubmissionState.QUEUED, 0) + sum(1 for s in queued if s.action == "run")
        for state in (SubmissionState.QUEUED, *JobState, *states):
            self._by_state.labels(state).set(states.get(state, 0))
        self._busy.set(scheduler.busy_workers())
        self._limit.set(max_concurrency)
        self._queued.set(len(queued))
        self._running.set(len(scheduler.running()))
        for entry in scheduler.pool.status():
            self._warm.labels(str(entry["model"])).set(int(entry["workers"]) if entry["ready"] else 0)  # type: ignore[call-overload]
        return generate_latest(self.registry).decode()
