"""From measurements to a recommendation: ``batch_size``, ``chunk_rows``, ``workers`` and ``memory``.

The rules, each with its reason:

- ``batch_size``: for ``time``, the fastest (a smaller one
  within 3 % of it wins, for its smaller memory); for ``cost``, the size with
  the fewest billed GB-seconds per row (memory size × seconds per row).
- ``memory``: the peak measured at that batch size × 1.5, plus 64 MB, rounded
  up to 64 MB: room for wider rows later in the input and for the output
  writer, so the memory watchdog never kills a healthy invocation.
- ``workers``: one per core. Workers beyond the cores only compete for them;
  fewer leave cores idle; on a function platform concurrency does not change
  the GB-seconds billed, so ``cost`` keeps every core busy too.
- a batch never holds more rows than its chunk: ``batch_size`` is capped at
  ``chunk_rows``, and the speed a chunk counts on is that of the largest
  measured batch that fits in it (or the smallest measured), never faster.
- ``chunk_rows``: a chunk must finish within ``timeout × 0.5`` at the
  measured speed (half the limit absorbs slower rows and a busy machine),
  and there should be about 8 chunks per worker so that the work balances
  and a lost invocation costs little; the smaller of the two wins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from squall.observe.cost import PriceTable, expected_cost

Objective = Literal["time", "cost"]
TIMEOUT_SHARE = 0.5
MEMORY_FACTOR = 1.5
MEMORY_HEADROOM_MB = 64
CHUNKS_PER_WORKER = 8
NEAR_BEST = 0.97


@dataclass(frozen=True)
class BatchRun:
    """One measured batch size: rows run, the fastest run's seconds, and the peak resident memory (MiB)."""

    batch_size: int
    rows: int
    seconds: float
    peak_mb: float

    @property
    def rows_per_s(self) -> float:
        """Rows per second of the fastest run."""
        return self.rows / self.seconds if self.seconds > 0 else float("inf")

    @property
    def memory_mb(self) -> int:
        """The memory limit this batch size needs, with the safety margin."""
        return _round_up(self.peak_mb * MEMORY_FACTOR + MEMORY_HEADROOM_MB, 64)


@dataclass(frozen=True)
class Recommendation:
    """The tuned values, why, and what the job should then take and cost."""

    batch_size: int
    chunk_rows: int
    workers: int
    memory: int
    rows_per_s: float
    memory_per_row_kb: float
    est_wall_s: float
    est_function_usd: float
    est_vm_usd: float
    objective: Objective
    runs: tuple[BatchRun, ...]

    def fields(self) -> dict[str, int]:
        """The spec fields to set."""
        return {"batch_size": self.batch_size, "chunk_rows": self.chunk_rows, "workers": self.workers, "memory": self.memory}

    def to_dict(self) -> dict[str, Any]:
        """The tuned fields, the expectations and every measured run, as plain data."""
        return {
            **self.fields(), "objective": self.objective, "rows_per_s_per_worker": round(self.rows_per_s, 1),
            "memory_per_row_kb": round(self.memory_per_row_kb, 3), "est_wall_s": round(self.est_wall_s, 3),
            "est_function_usd": self.est_function_usd, "est_vm_usd": self.est_vm_usd,
            "runs": [{**run.__dict__, "rows_per_s": round(run.rows_per_s, 1)} for run in self.runs],
        }


def recommend(
    runs: list[BatchRun], baseline_mb: float, total_rows: int, timeout: float, cores: int,
    objective: Objective, prices: PriceTable,
) -> Recommendation:
    """The recommendation for a job of ``total_rows`` rows (see the module docstring for the rules)."""
    workers = max(1, cores)
    balanced = max(1, math.ceil(total_rows / (workers * CHUNKS_PER_WORKER)))
    best = _best_run(runs, objective)
    speed = _speed_within(runs, best, balanced)
    chunk_rows = min(max(1, int(speed.rows_per_s * timeout * TIMEOUT_SHARE)), balanced)
    chunks = max(1, math.ceil(total_rows / chunk_rows))
    durations = [min(chunk_rows, total_rows) / speed.rows_per_s] * chunks
    cost = expected_cost(durations, best.memory_mb, prices)
    per_row = max(0.0, best.peak_mb - baseline_mb) * 1024 / max(1, min(best.batch_size, best.rows))
    return Recommendation(
        batch_size=min(best.batch_size, chunk_rows), chunk_rows=chunk_rows, workers=workers, memory=best.memory_mb,
        rows_per_s=speed.rows_per_s, memory_per_row_kb=per_row,
        est_wall_s=total_rows / (speed.rows_per_s * workers), est_function_usd=cost.function_total,
        est_vm_usd=cost.vm_total, objective=objective, runs=tuple(runs),
    )


def _best_run(runs: list[BatchRun], objective: Objective) -> BatchRun:
    if objective == "cost":
        return min(runs, key=lambda run: run.memory_mb / run.rows_per_s)
    fastest = max(run.rows_per_s for run in runs)
    return min((run for run in runs if run.rows_per_s >= fastest * NEAR_BEST), key=lambda run: run.batch_size)


def _speed_within(runs: list[BatchRun], best: BatchRun, chunk_rows: int) -> BatchRun:
    """The run whose speed a chunk of ``chunk_rows`` rows can count on: a batch never holds more rows than its
    chunk, so when ``best`` is larger, the largest measured batch that fits (or the smallest) stands for it."""
    if best.batch_size <= chunk_rows:
        return best
    fitting = [run for run in runs if run.batch_size <= chunk_rows]
    return max(fitting, key=lambda run: run.batch_size) if fitting else min(runs, key=lambda run: run.batch_size)


def _round_up(value: float, step: int) -> int:
    return int(math.ceil(value / step) * step)
