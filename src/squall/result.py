"""How a job ended: the record :func:`squall.run` and its siblings return."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from squall.states import JobState

if TYPE_CHECKING:
    from squall.observe.cost import CostEstimate


@dataclass(frozen=True)
class JobResult:
    """How a job ended: its state, the rows it read and wrote, and where the results are."""

    job_id: str
    state: JobState
    output: str
    rows_in: int
    rows_out: int
    error_rows: int
    dead_chunks: int
    chunks: int
    parts: tuple[str, ...]
    wall_s: float
    cold_starts: int
    worker_starts: int
    invocations: int
    message: str | None = None
    batch_sizes: tuple[int, ...] = ()
    cost: CostEstimate | None = None

    @property
    def rows_per_s(self) -> float:
        """Rows read per second of wall time."""
        return self.rows_in / self.wall_s if self.wall_s > 0 else 0.0
