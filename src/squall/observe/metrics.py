"""Prometheus metrics of running jobs, fed by lifecycle events.

:class:`JobMetrics` owns a registry; ``squall serve`` exposes it, and a CLI
run writes it in the Prometheus text format at the end (``metrics_file``).
Names and labels:

=====================================  =========  ===================================================
``squall_rows_total{kind}``            counter    rows read (``in``), predicted (``out``), failed (``error``)
``squall_invocations_total{outcome}``  counter    invocations by how they ended (ok, error, timeout, memory, lost)
``squall_invocation_duration_seconds`` histogram  invocation durations
``squall_cold_starts_total``           counter    worker processes started (each one's first invocation is a cold start)
``squall_retries_total``               counter    failed attempts whose chunk was queued again (retry, split, batch lane)
``squall_dead_chunks_total``           counter    chunks dead-lettered
``squall_queue_depth``                 gauge      chunks waiting to run (not yet handed to a worker)
``squall_busy_workers``                gauge      workers running an invocation now
=====================================  =========  ===================================================
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, write_to_textfile

from squall.observe.events import JobListener
from squall.states import Outcome

if TYPE_CHECKING:
    from squall.runtime.task import InvocationReport
    from squall.invocations import InvocationRecord

DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0)


class JobMetrics(JobListener):
    """Counts what jobs do into a Prometheus registry (a fresh one unless ``registry`` is given)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.rows = Counter("squall_rows", "Rows read (in), predicted (out) and failed (error)", ["kind"], registry=self.registry)
        self.invocations = Counter("squall_invocations", "Invocations by outcome", ["outcome"], registry=self.registry)
        self.durations = Histogram(
            "squall_invocation_duration_seconds", "Invocation durations", buckets=DURATION_BUCKETS, registry=self.registry
        )
        self.cold_starts = Counter("squall_cold_starts", "Worker processes started (cold starts)", registry=self.registry)
        self.retries = Counter("squall_retries", "Failed attempts whose chunk was queued again", registry=self.registry)
        self.dead = Counter("squall_dead_chunks", "Chunks dead-lettered", registry=self.registry)
        self.queue_depth = Gauge("squall_queue_depth", "Chunks waiting to run", registry=self.registry)
        self.busy = Gauge("squall_busy_workers", "Workers running an invocation now", registry=self.registry)
        self._outstanding = 0
        self._busy = 0

    def job_started(self, job_id: str, chunks_total: int, chunks_done: int, est_rows: int) -> None:
        self._outstanding = chunks_total - chunks_done
        self._update_queue()

    def worker_ready(self, worker: int, init_s: float) -> None:
        self.cold_starts.inc()

    def invocation_started(self, job_id: str, chunk_id: int, attempt: int, worker: int) -> None:
        self._busy += 1
        self._update_queue()

    def invocation_finished(self, report: InvocationReport, committed: bool) -> None:
        if committed:
            self._outstanding -= 1
            self.rows.labels("in").inc(report.rows_in)
            self.rows.labels("out").inc(report.rows_out)
            self.rows.labels("error").inc(report.error_rows)

    def invocation_closed(self, record: InvocationRecord) -> None:
        self._busy -= 1
        self.invocations.labels(record.outcome).inc()
        self.durations.observe(record.duration_s)
        self._update_queue()

    def chunk_failed(self, job_id: str, chunk_id: int, attempt: int, outcome: str, error: str, dead: bool) -> None:
        if dead:
            self._outstanding -= 1
            self.dead.inc()
        else:
            self.retries.inc()
            self._outstanding += 1 if outcome == Outcome.SPLIT else 0  # one chunk became two
        self._update_queue()

    def _update_queue(self) -> None:
        self.busy.set(self._busy)
        self.queue_depth.set(max(0, self._outstanding - self._busy))

    def text(self) -> str:
        """The metrics in the Prometheus text exposition format."""
        return generate_latest(self.registry).decode()

    def write(self, path: str | Path) -> None:
        """Write the metrics to ``path`` atomically (the node exporter's textfile format)."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        write_to_textfile(str(path), self.registry)
