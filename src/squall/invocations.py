"""``InvocationRecord``: one finished invocation as the store keeps it and as a function platform reports and bills it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from squall.runtime.task import InvocationReport
from squall.states import Outcome


@dataclass(frozen=True)
class InvocationRecord:
    """One invocation as a function platform reports and bills it.

    ``outcome`` is how the invocation itself ended: ``ok``, ``error``,
    ``timeout``, ``memory`` (killed over the memory limit) or ``lost`` (the
    worker died, or the coordinator stopped). ``started_at`` is wall-clock
    time; ``duration_s`` is the worker's own measure when it reported, else
    the time until the coordinator gave up on it. ``init_s`` is set on a cold
    start (the first invocation of a fresh worker process); ``max_rss_mb`` is
    the worker's peak resident memory during the invocation, unknown (``None``)
    when the worker did not report.
    """

    job_id: str
    chunk_id: int
    attempt: int
    worker: int
    outcome: str
    started_at: float
    duration_s: float
    init_s: float | None = None
    max_rss_mb: float | None = None
    rows_in: int = 0
    rows_out: int = 0
    error_rows: int = 0
    error: str | None = None

    @property
    def cold_start(self) -> bool:
        """Whether this was the first invocation of a fresh worker process."""
        return self.init_s is not None

    @classmethod
    def from_row(
        cls, job_id: str, chunk_id: int, attempt: int, worker: int | None, started: float, finished: float,
        outcome: str, error: str | None, report: str | None, init_s: float | None,
    ) -> InvocationRecord:
        """The record of one closed ``attempts`` row."""
        if outcome in (Outcome.SPLIT, Outcome.TO_BATCH_LANE) and error:
            outcome = error.split(":", 1)[0]
        if not report:
            return cls(job_id, chunk_id, attempt, -1 if worker is None else worker, outcome, started,
                       max(0.0, finished - started), init_s, error=error)
        return cls.of_report(InvocationReport.from_dict(json.loads(report)), outcome, init_s, error)

    @classmethod
    def of_report(
        cls, report: InvocationReport, outcome: str, init_s: float | None = None, error: str | None = None
    ) -> InvocationRecord:
        """The record of an invocation that reported ``report`` and closed with ``outcome``."""
        # A worker that learns of its cold start only as it runs (a queue consumer) reports it in its report.
        cold = init_s if init_s is not None else report.init_s
        return cls(
            report.job_id, report.chunk_id, report.attempt, report.worker, outcome, report.started_at,
            report.duration_s, cold, report.max_rss_mb, report.rows_in, report.rows_out, report.error_rows, error,
        )

    def to_dict(self) -> dict[str, Any]:
        """Every field, plus ``cold_start``, as plain data."""
        return {**asdict(self), "cold_start": self.cold_start}
