"""Where jobs stand, read from the store: status, the recent jobs, dead letters and the report.

:meth:`JobStatus.to_dict` is the one status shape: ``squall status --json``
prints it and the HTTP API serves it (with the service's own fields added).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from squall.states import ChunkState, JobState
from squall.store import ChunkCounts, JobRecord, JobStore

if TYPE_CHECKING:
    from squall.observe.report import JobReport


@dataclass(frozen=True)
class JobStatus:
    """A job's record and where its chunks are."""

    job: JobRecord
    counts: ChunkCounts

    @property
    def rows_per_s(self) -> float:
        """Rows read per second, from the start until the end (or now, for a running job)."""
        end = self.job.finished_at or time.time()
        start = self.job.started_at or self.job.created_at
        return self.counts.rows_in / (end - start) if end > start else 0.0

    @property
    def live_chunks(self) -> int:
        """Chunks that still count (a split chunk was replaced by its two children)."""
        return sum(n for state, n in self.counts.by_state.items() if state != ChunkState.SPLIT)

    @property
    def progress(self) -> float:
        """The share of live chunks that are finished (done or dead); 1.0 once the job SUCCEEDED."""
        if self.job.state == JobState.SUCCEEDED:
            return 1.0
        finished = self.counts.count(ChunkState.DONE) + self.counts.count(ChunkState.DEAD)
        return finished / self.live_chunks if self.live_chunks else 0.0

    @property
    def eta_s(self) -> float | None:
        """Seconds until the estimated rows are read at today's rate; ``None`` when it is not running."""
        rate, left = self.rows_per_s, max(self.job.est_rows, self.counts.rows_in) - self.counts.rows_in
        return left / rate if rate > 0 and JobState(self.job.state).active else None

    def to_dict(self) -> dict[str, Any]:
        """The job's status as plain data: the shape the CLI's ``--json`` and the HTTP API both give."""
        job, counts = self.job, self.counts
        eta = self.eta_s
        return {
            "id": job.job_id,
            "job_id": job.job_id,
            "state": str(job.state),
            "message": job.message,
            "created_at": job.created_at,
            "started_at": job.started_at,
            "finished_at": job.finished_at,
            "model": job.spec.get("model"),
            "input": job.spec.get("input"),
            "output": job.output,
            "chunks_total": self.live_chunks,
            "chunks": {"total": job.chunks_total, **{str(state): n for state, n in counts.by_state.items()}},
            "est_rows": job.est_rows,
            "rows_in": counts.rows_in,
            "rows_out": counts.rows_out,
            "error_rows": counts.error_rows,
            "rows_per_s": round(self.rows_per_s, 1),
            "eta_s": round(eta, 1) if eta is not None else None,
            "progress": round(self.progress, 4),
            "cold_starts": job.cold_starts,
            "worker_starts": job.worker_starts,
        }


@dataclass(frozen=True)
class DeadChunk:
    """A dead-lettered chunk: what it reads and why each attempt failed."""

    chunk_id: int
    est_rows: int
    pieces: list[dict[str, Any]]
    attempts: list[dict[str, Any]]


def status(job_id: str, state_dir: str | Path | None = None) -> JobStatus:
    """Where ``job_id`` stands."""
    with JobStore.at(state_dir) as store:
        return JobStatus(store.job(job_id), store.counts(job_id))


def jobs(state_dir: str | Path | None = None, limit: int = 20) -> list[JobStatus]:
    """The most recent jobs, newest first."""
    with JobStore.at(state_dir) as store:
        return [JobStatus(job, store.counts(job.job_id)) for job in store.recent_jobs(limit)]


def dead_letters(job_id: str, state_dir: str | Path | None = None) -> list[DeadChunk]:
    """Every dead chunk of ``job_id`` with every attempt's outcome, reason and timings."""
    with JobStore.at(state_dir) as store:
        store.job(job_id)
        return [
            DeadChunk(c.chunk_id, c.est_rows, [dict(p.__dict__) for p in c.pieces], store.attempts(job_id, c.chunk_id))
            for c in store.chunks_in_state(job_id, ChunkState.DEAD)
        ]


def report(job_id: str, state_dir: str | Path | None = None) -> JobReport:
    """The report of ``job_id``: summary, every invocation, throughput, durations, failures and cost."""
    from squall.observe.report import JobReport

    with JobStore.at(state_dir) as store:
        return JobReport.load(store, job_id)
