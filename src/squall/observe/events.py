"""Lifecycle events of a job. Progress bars, logs and metrics are listeners; the coordinator only emits.

Every method has a do-nothing default, so a listener overrides what it cares about.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from squall.result import JobResult
    from squall.runtime.task import InvocationReport
    from squall.invocations import InvocationRecord


class JobListener:
    """Receives a job's lifecycle events, in order, on the coordinator's thread."""

    def job_started(self, job_id: str, chunks_total: int, chunks_done: int, est_rows: int) -> None:
        """The queue is ready and workers are starting."""

    def worker_ready(self, worker: int, init_s: float) -> None:
        """A worker finished its cold start."""

    def invocation_started(self, job_id: str, chunk_id: int, attempt: int, worker: int) -> None:
        """A chunk was handed to ``worker``."""

    def invocation_finished(self, report: InvocationReport, committed: bool) -> None:
        """An invocation reported; ``committed`` says whether its part became the chunk's output."""

    def chunk_failed(self, job_id: str, chunk_id: int, attempt: int, outcome: str, error: str, dead: bool) -> None:
        """An attempt failed; ``dead`` says the chunk was dead-lettered rather than queued for retry."""

    def invocation_closed(self, record: InvocationRecord) -> None:
        """An invocation ended, however it ended (reported, killed or lost), as the store recorded it; the REPORT line."""

    def job_finalizing(self, job_id: str) -> None:
        """Every chunk is done or dead: the job's manifest and final state are being written."""

    def job_finished(self, result: JobResult) -> None:
        """The job reached a final state (or stopped)."""
