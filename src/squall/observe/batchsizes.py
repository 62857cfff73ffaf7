"""The batch size each worker ended up with, for the summary (it matters when ``batch_size`` is ``auto``)."""

from __future__ import annotations

from squall.observe.events import JobListener
from squall.runtime.task import InvocationReport


class BatchSizeRecorder(JobListener):
    """Remembers the last batch size each worker reported."""

    def __init__(self) -> None:
        self._by_worker: dict[int, int] = {}

    def invocation_finished(self, report: InvocationReport, committed: bool) -> None:
        if report.batch_size:
            self._by_worker[report.worker] = report.batch_size

    def sizes(self) -> tuple[int, ...]:
        """The distinct sizes the workers use now, smallest first."""
        return tuple(sorted(set(self._by_worker.values())))
