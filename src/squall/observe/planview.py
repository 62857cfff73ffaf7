"""How ``squall plan`` shows a plan: a table for people, JSON for machines."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from squall.observe.cost import dollars
from squall.observe.forecast import Forecast
from squall.plan.planner import Plan
from squall.spec import JobSpec

_SHOWN_CHUNKS = 20


def plan_json(plan: Plan, spec: JobSpec, forecast: Forecast) -> dict[str, Any]:
    """The plan and its forecast as plain data."""
    return {
        "forecast": forecast.to_dict(),
        "format": plan.format,
        "files": len(plan.files),
        "bytes": plan.total_bytes,
        "est_rows": plan.est_rows,
        "target_rows_per_chunk": plan.target_rows,
        "workers": spec.workers,
        "key": list(plan.key),
        "features": list(plan.features),
        "chunks": [
            {
                "chunk": c.chunk_id,
                "est_rows": c.est_rows,
                "est_bytes": c.est_bytes,
                "pieces": [{"uri": p.uri, "kind": p.kind, "start": p.start, "stop": p.stop} for p in c.pieces],
            }
            for c in plan.chunks
        ],
    }


def plan_table(console: Console, plan: Plan, spec: JobSpec, forecast: Forecast) -> None:
    """Print the plan's summary, its forecast, its first chunks and its warnings."""
    console.print(
        f"[bold]{len(plan.chunks)} chunks[/] from {len(plan.files)} {plan.format} file(s), "
        f"{plan.total_bytes:,} bytes, ~{plan.est_rows:,} rows; ~{plan.target_rows:,} rows per chunk, "
        f"{spec.workers} worker(s)"
    )
    console.print(f"key: {list(plan.key) or ['_source', '_offset']}  features ({len(plan.features)}): {_short(plan.features)}")
    _forecast(console, forecast)
    table = Table("chunk", "rows (est.)", "bytes (est.)", "pieces")
    for chunk in plan.chunks[:_SHOWN_CHUNKS]:
        pieces = ", ".join(f"{p.uri.rsplit('/', 1)[-1]}[{p.kind} {p.start}:{p.stop}]" for p in chunk.pieces[:3])
        more = f" +{len(chunk.pieces) - 3} more" if len(chunk.pieces) > 3 else ""
        table.add_row(str(chunk.chunk_id), f"{chunk.est_rows:,}", f"{chunk.est_bytes:,}", pieces + more)
    console.print(table)
    if len(plan.chunks) > _SHOWN_CHUNKS:
        console.print(f"… and {len(plan.chunks) - _SHOWN_CHUNKS} more chunks (--json lists all)")
    if spec.workers * 4 > len(plan.chunks) and len(plan.chunks):
        console.print(f"[yellow]note:[/] fewer than 4 chunks per worker; some workers may idle (set --chunk-rows lower)")
    for warning in forecast.warnings:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)


def _forecast(console: Console, forecast: Forecast) -> None:
    rows, sizes = forecast.rows_per_chunk, forecast.bytes_per_chunk
    console.print(
        f"per chunk: {rows[0]:,}–{rows[2]:,} rows (median {rows[1]:,}), {sizes[0]:,}–{sizes[2]:,} bytes "
        f"(median {sizes[1]:,}); {forecast.invocations:,} invocations", highlight=False,
    )
    if forecast.speed is None or forecast.cost is None or forecast.wall_s is None:
        return
    cost = forecast.cost
    console.print(
        f"at {forecast.speed.rows_per_s:,.0f} rows/s per worker (measured in job {forecast.speed.job_id}): "
        f"~{forecast.wall_s:,.1f} s, {dollars(cost.function_total)} as functions ({cost.gb_seconds:,.1f} GB-s), "
        f"{dollars(cost.vm_total)} on one {cost.prices.vm_cores}-core VM", highlight=False,
    )


def _short(names: tuple[str, ...]) -> str:
    return ", ".join(names[:8]) + (f", … ({len(names) - 8} more)" if len(names) > 8 else "")
