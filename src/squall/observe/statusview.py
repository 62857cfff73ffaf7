"""How ``squall status`` shows jobs."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from squall.job_status import JobStatus


def status_table(console: Console, statuses: list[JobStatus], detailed: bool) -> None:
    """One line per job, or every detail of one."""
    if detailed and statuses:
        for name, value in statuses[0].to_dict().items():
            if name.endswith("_at") and value is not None:
                value = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))
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


def dlq_table(console: Console, dead: list[Any]) -> None:
    """Each dead chunk, then one line per attempt with its outcome, duration and reason."""
    if not dead:
        console.print("no dead chunks")
        return
    for chunk in dead:
        where = ", ".join(f"{p['uri'].rsplit('/', 1)[-1]}[{p['kind']} {p['start']}:{p['stop']}]" for p in chunk.pieces)
        console.print(f"[bold]chunk {chunk.chunk_id}[/] (~{chunk.est_rows:,} rows) {where}", highlight=False)
        table = Table("attempt", "worker", "outcome", "seconds", "reason", box=None)
        for attempt in chunk.attempts:
            took = (attempt["finished_at"] or 0) - attempt["started_at"] if attempt["finished_at"] else None
            table.add_row(
                str(attempt["attempt"]), str(attempt["worker"]), str(attempt["outcome"]),
                f"{took:.2f}" if took is not None else "-", str(attempt["error"] or ""),
            )
        console.print(table)
