"""What a plan will cost before it runs: invocations, duration and price at a measured speed, and warnings.

The speed is measured, never guessed: the rows per second per worker and the
time to the first invocation (model load, worker start) of the most recent job in the state directory that ran the
same model with the same method (``squall tune`` or any earlier run measures
it). Without such a job the forecast says so and gives no duration or cost.
"""

from __future__ import annotations

import json
import os
import statistics
from dataclasses import dataclass, field
from typing import Any

from squall.observe.cost import CostEstimate, PriceTable, expected_cost, memory_size_mb
from squall.plan.planner import Plan
from squall.spec import JobSpec
from squall.store import JobStore
from squall.states import Outcome

_JOBS_SEARCHED = 50


@dataclass(frozen=True)
class MeasuredSpeed:
    """How fast one worker ran this model in an earlier job, and how long that job took to start its first invocation."""

    job_id: str
    rows_per_s: float
    startup_s: float
    max_rss_mb: float


@dataclass(frozen=True)
class Forecast:
    """A plan's expected invocations, wall time and cost (when a speed was measured), and its warnings."""

    invocations: int
    rows_per_chunk: tuple[int, int, int]
    bytes_per_chunk: tuple[int, int, int]
    speed: MeasuredSpeed | None
    wall_s: float | None
    cost: CostEstimate | None
    warnings: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        """The forecast as plain data (``squall plan --json``)."""
        return {
            "invocations": self.invocations,
            "rows_per_chunk": dict(zip(("min", "median", "max"), self.rows_per_chunk)),
            "bytes_per_chunk": dict(zip(("min", "median", "max"), self.bytes_per_chunk)),
            "measured": None if self.speed is None else self.speed.__dict__,
            "est_wall_s": None if self.wall_s is None else round(self.wall_s, 3),
            "est_cost": None if self.cost is None else self.cost.to_dict(),
            "warnings": list(self.warnings),
        }


def measured_speed(store: JobStore, spec: JobSpec) -> MeasuredSpeed | None:
    """The speed of the newest job that ran ``spec``'s model and method, from its successful invocations."""
    wanted = {"uri": os.path.abspath(spec.model) if os.path.exists(spec.model) else spec.model, "method": spec.method}
    for job in store.recent_jobs(_JOBS_SEARCHED):
        ran = json.loads(job.task).get("model", {})  # the task names the model as the workers loaded it: absolute
        if (ran.get("uri"), ran.get("method")) != (wanted["uri"], wanted["method"]):
            continue
        ok = [r for r in store.invocations(job.job_id) if r.outcome == Outcome.OK and r.rows_in > 0]
        busy = sum(r.duration_s for r in ok)
        if not ok or busy <= 0:
            continue
        started = job.started_at or job.created_at
        startup = max(0.0, min(r.started_at for r in ok) - started)
        peak = max((r.max_rss_mb or 0.0) for r in ok)
        return MeasuredSpeed(job.job_id, sum(r.rows_in for r in ok) / busy, startup, peak)
    return None


def forecast(plan: Plan, spec: JobSpec, speed: MeasuredSpeed | None) -> Forecast:
    """The forecast of ``plan`` run under ``spec`` at ``speed``."""
    rows = [c.est_rows for c in plan.chunks] or [0]
    sizes = [c.est_bytes for c in plan.chunks] or [0]
    warnings = _core_warnings(spec)
    wall = cost = None
    if speed is None:
        warnings.append("no measured speed for this model: run `squall tune` or a job first for duration and cost estimates")
    else:
        durations = [c.est_rows / speed.rows_per_s for c in plan.chunks]
        wall = speed.startup_s + sum(durations) / spec.workers
        cost = expected_cost(durations, memory_size_mb(spec), PriceTable.of(spec))
        warnings += _timeout_warnings(plan, spec, speed)
        if spec.memory and speed.max_rss_mb > spec.memory:
            warnings.append(f"workers peaked at {speed.max_rss_mb:.0f} MB in job {speed.job_id}, over the {spec.memory} MB memory limit")
    return Forecast(len(plan.chunks), _spread(rows), _spread(sizes), speed, wall, cost, tuple(warnings))


def _spread(values: list[int]) -> tuple[int, int, int]:
    return min(values), int(statistics.median(values)), max(values)


def _core_warnings(spec: JobSpec) -> list[str]:
    cores = os.cpu_count() or 1
    if spec.workers > cores:
        return [f"{spec.workers} workers on {cores} cores: they will compete for the CPU; use --workers {cores}"]
    return []


def _timeout_warnings(plan: Plan, spec: JobSpec, speed: MeasuredSpeed) -> list[str]:
    slow = [c for c in plan.chunks if c.est_rows / speed.rows_per_s > spec.timeout]
    if not slow:
        return []
    worst = max(slow, key=lambda c: c.est_rows)
    fits = int(speed.rows_per_s * spec.timeout / 2)
    return [
        f"{len(slow)} chunk(s) will exceed the {spec.timeout:g} s timeout at {speed.rows_per_s:,.0f} rows/s "
        f"(chunk {worst.chunk_id}: ~{worst.est_rows:,} rows, ~{worst.est_rows / speed.rows_per_s:,.1f} s); "
        f"set --chunk-rows {fits:,} or lower, or raise --timeout"
    ]
