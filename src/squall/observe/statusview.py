"""How ``squall status`` shows jobs."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from squall.api import JobStatus


def status_json(status: JobStatus) -> dict[str, Any]:
    """A job's status as plain data."""
    job, counts = status.job, status.counts
    return {
        "job_id": job.job_id,
        "state": job.state,
        "output": job.output,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "chunks": {"total": job.chunks_total, **counts.by_state},
        "rows_in": counts.rows_in,
        "rows_out": counts.rows_out,
        "error_rows": counts.error_rows,
        "est_rows": job.est_rows,
        "rows_per_s": round(status.rows_per_s, 1),
        "cold_starts": job.cold_starts,
        "message": job.message,
    }


def status_table(console: Console, statuses: list[JobStatus], detailed: bool) -> None:
    """One line per job, or every detail of one."""
    if detailed and statuses:
        for name, value in status_json(statuses[0]).items():
            console.print(f"[bold]{name:>12}[/]  {value}", highlight=False)
        return
    if not statuses:
        console.print("no jobs yet")
        return
    table = Table("job", "state", "chunks done", "rows out", "rows/s", "created")
    for status in statuses:
        job, counts = status.job, status.counts
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(job.created_at))
        table.add_row(
            job.job_id, job.state, f"{counts.count('done')}/{job.chunks_total}", f"{counts.rows_out:,}",
            f"{status.rows_per_s:,.0f}", created,
        )
    console.print(table)
