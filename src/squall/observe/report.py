"""The job report as data: summary, every invocation, throughput over time, durations, failures and cost.

``squall report JOB --format json`` prints :meth:`JobReport.to_dict`; the
HTML report (:mod:`squall.observe.report_html`) draws the same data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from squall.observe.cost import CostEstimate, PriceTable, measured_cost, memory_size_mb
from squall.spec import JobSpec
from squall.invocations import InvocationRecord
from squall.store import ChunkCounts, JobRecord, JobStore
from squall.states import ChunkState, Outcome

THROUGHPUT_BINS = 40
DURATION_BINS = 20


@dataclass(frozen=True)
class DeadLetter:
    """A dead chunk and each of its attempts' outcome and reason."""

    chunk_id: int
    est_rows: int
    attempts: tuple[InvocationRecord, ...]


@dataclass(frozen=True)
class JobReport:
    """Everything the report shows about one job, read from the store."""

    job: JobRecord
    counts: ChunkCounts
    invocations: tuple[InvocationRecord, ...]
    dead: tuple[DeadLetter, ...]
    cost: CostEstimate

    @classmethod
    def load(cls, store: JobStore, job_id: str) -> JobReport:
        """Read the report of ``job_id`` (raises :class:`JobNotFoundError` for an unknown job)."""
        job = store.job(job_id)
        spec = JobSpec.model_validate(job.spec)
        invocations = tuple(store.invocations(job_id))
        by_chunk: dict[int, list[InvocationRecord]] = {}
        for record in invocations:
            by_chunk.setdefault(record.chunk_id, []).append(record)
        dead = tuple(
            DeadLetter(c.chunk_id, c.est_rows, tuple(by_chunk.get(c.chunk_id, ())))
            for c in store.chunks_in_state(job_id, ChunkState.DEAD)
        )
        cost = measured_cost(invocations, memory_size_mb(spec), PriceTable.of(spec))
        return cls(job, store.counts(job_id), invocations, dead, cost)

    @property
    def origin(self) -> float:
        """Time zero of the timeline: the job's start, or an earlier cold start."""
        starts = [r.started_at - (r.init_s or 0.0) for r in self.invocations]
        return min([self.job.started_at or self.job.created_at, *starts])

    @property
    def end(self) -> float:
        """When the job finished, or its last invocation did if that was later."""
        ends = [r.started_at + r.duration_s for r in self.invocations]
        return max([self.job.finished_at or self.origin, *ends])

    @property
    def wall_s(self) -> float:
        """Seconds from the timeline's origin to the end."""
        return max(0.0, self.end - self.origin)

    @property
    def failures(self) -> tuple[InvocationRecord, ...]:
        """Invocations that did not end ``ok``: each led to a retry, a split, the batch lane or a dead letter."""
        return tuple(r for r in self.invocations if r.outcome != Outcome.OK)

    def summary(self) -> dict[str, Any]:
        """State, rows, chunks, invocations, starts, wall time and throughput."""
        counts = self.counts
        wall = self.wall_s
        return {
            "job_id": self.job.job_id, "state": self.job.state, "message": self.job.message,
            "rows_in": counts.rows_in, "rows_out": counts.rows_out, "error_rows": counts.error_rows,
            "chunks": self.job.chunks_total, "chunks_done": counts.count(ChunkState.DONE), "dead_chunks": counts.count(ChunkState.DEAD),
            "invocations": len(self.invocations), "retries": len(self.failures),
            "cold_starts": sum(1 for r in self.invocations if r.cold_start),
            "model_loads": self.job.cold_starts, "worker_starts": self.job.worker_starts,
            "workers": len({r.worker for r in self.invocations}),
            "wall_s": round(wall, 3), "rows_per_s": round(counts.rows_in / wall, 1) if wall > 0 else 0.0,
        }

    def throughput(self, bins: int = THROUGHPUT_BINS) -> list[tuple[float, float]]:
        """Rows per second committed in each of ``bins`` equal slices of the wall time: (slice start s, rows/s)."""
        wall = self.wall_s
        if wall <= 0:
            return []
        width = wall / bins
        rows = [0.0] * bins
        for record in self.invocations:
            if record.outcome == Outcome.OK:
                finished = record.started_at + record.duration_s - self.origin
                rows[min(bins - 1, max(0, int(finished / width)))] += record.rows_in
        return [(round(i * width, 3), value / width) for i, value in enumerate(rows)]

    def duration_histogram(self, bins: int = DURATION_BINS) -> list[tuple[float, float, int]]:
        """Invocation durations in ``bins`` equal bins from 0 to the longest: (low s, high s, count)."""
        durations = [r.duration_s for r in self.invocations]
        if not durations:
            return []
        top = max(durations) or 1.0
        width = top / bins
        counts = [0] * bins
        for duration in durations:
            counts[min(bins - 1, int(duration / width))] += 1
        return [(round(i * width, 6), round((i + 1) * width, 6), n) for i, n in enumerate(counts)]

    def to_dict(self) -> dict[str, Any]:
        """The whole report as plain data (``squall report --format json``)."""
        return {
            "summary": self.summary(),
            "invocations": [{**r.to_dict(), "start_s": round(r.started_at - self.origin, 6)} for r in self.invocations],
            "throughput": [{"t_s": t, "rows_per_s": round(v, 1)} for t, v in self.throughput()],
            "durations": [{"low_s": lo, "high_s": hi, "count": n} for lo, hi, n in self.duration_histogram()],
            "failures": [r.to_dict() for r in self.failures],
            "dead_letters": [
                {"chunk": d.chunk_id, "est_rows": d.est_rows, "attempts": [a.to_dict() for a in d.attempts]} for d in self.dead
            ],
            "cost": self.cost.to_dict(),
        }
