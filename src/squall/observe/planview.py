"""How ``squall plan`` shows a plan: a table for people, JSON for machines."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from squall.plan.planner import Plan
from squall.spec import JobSpec

_SHOWN_CHUNKS = 20


def plan_json(plan: Plan, spec: JobSpec) -> dict[str, Any]:
    """The plan as plain data."""
    return {
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


def plan_table(console: Console, plan: Plan, spec: JobSpec) -> None:
    """Print the plan's summary and its first chunks."""
    console.print(
        f"[bold]{len(plan.chunks)} chunks[/] from {len(plan.files)} {plan.format} file(s), "
        f"{plan.total_bytes:,} bytes, ~{plan.est_rows:,} rows; ~{plan.target_rows:,} rows per chunk, "
        f"{spec.workers} worker(s)"
    )
    console.print(f"key: {list(plan.key) or ['_source', '_offset']}  features ({len(plan.features)}): {_short(plan.features)}")
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


def _short(names: tuple[str, ...]) -> str:
    return ", ".join(names[:8]) + (f", … ({len(names) - 8} more)" if len(names) > 8 else "")
