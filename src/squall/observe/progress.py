"""What a person sees while a job runs: a live progress bar, then a summary."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from squall.observe.cost import CostEstimate, dollars
from squall.observe.events import JobListener
from squall.states import JobState

if TYPE_CHECKING:
    from squall.result import JobResult
    from squall.runtime.task import InvocationReport


class ProgressBar(JobListener):
    """A rich progress bar: chunks done of total, rows, rows/s, elapsed time and ETA."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("chunks · {task.fields[rows]:,} rows · {task.fields[rate]:,.0f} rows/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._task_id: TaskID | None = None
        self._rows = 0

    def job_started(self, job_id: str, chunks_total: int, chunks_done: int, est_rows: int) -> None:
        self._progress.start()
        self._task_id = self._progress.add_task("predicting", total=chunks_total, completed=chunks_done, rows=0, rate=0.0)

    def invocation_finished(self, report: InvocationReport, committed: bool) -> None:
        if self._task_id is None or not committed:
            return
        self._rows += report.rows_in
        elapsed = self._progress.tasks[0].elapsed or 0.0
        rate = self._rows / elapsed if elapsed > 0 else 0.0
        self._progress.update(self._task_id, advance=1, rows=self._rows, rate=rate)

    def chunk_failed(self, job_id: str, chunk_id: int, attempt: int, outcome: str, error: str, dead: bool) -> None:
        what = "dead-lettered" if dead else "will retry"
        self._progress.console.print(f"[yellow]chunk {chunk_id} attempt {attempt} {outcome}: {error} ({what})")
        if dead and self._task_id is not None:
            self._progress.update(self._task_id, advance=1)

    def job_finished(self, result: JobResult) -> None:
        self.stop()

    def stop(self) -> None:
        self._progress.stop()


def summary_table(result: JobResult) -> Table:
    """The end-of-job summary: rows, wall time, rows/s, cold starts, parts, output."""
    colour = {JobState.SUCCEEDED: "green", JobState.PARTIAL: "yellow"}.get(JobState(result.state), "red")
    table = Table(show_header=False, box=None, padding=(0, 2))
    table.add_row("job", result.job_id)
    table.add_row("state", f"[bold {colour}]{result.state}")
    table.add_row("rows", f"{result.rows_in:,} read · {result.rows_out:,} predicted · {result.error_rows:,} errors")
    table.add_row("wall time", f"{result.wall_s:.2f} s ({result.rows_per_s:,.0f} rows/s)")
    table.add_row("invocations", f"{result.invocations} on {result.worker_starts} worker starts ({result.cold_starts} model loads)")
    table.add_row("chunks", f"{result.chunks} ({result.dead_chunks} dead) → {len(result.parts)} parts")
    if result.batch_sizes:
        table.add_row("batch size", " / ".join(f"{size:,}" for size in result.batch_sizes) + " rows per model call")
    table.add_row("output", result.output)
    if result.cost is not None:
        table.add_row("cost", cost_line(result.cost))
    if result.message:
        table.add_row("note", result.message)
    return table


def cost_line(cost: CostEstimate) -> str:
    """The cost estimate in one line: function platform (GB-seconds, requests) against one VM."""
    return (
        f"{dollars(cost.function_total)} as functions ({cost.gb_seconds:,.1f} GB-s at {cost.memory_mb} MB, "
        f"{cost.requests:,} requests) · {dollars(cost.vm_total)} on one {cost.prices.vm_cores}-core VM "
        f"({cost.vm_seconds:,.0f} s billed)"
    )
