"""A job's limits: how long an invocation may run, when a failed chunk is tried again, split or dead-lettered,
and how many failed rows and dead chunks the job tolerates. The coordinator enforces them; finalize judges by them."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RetryPolicy:
    """``max_attempts`` attempts in all; the n-th retry waits a uniform time in ``[0, min(base·2^(n-1), max)]``."""

    max_attempts: int = 3
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    no_retry_on: tuple[str, ...] = ()

    def delay(self, failed_attempts: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before the next attempt, after ``failed_attempts`` failures (≥ 1)."""
        ceiling = min(self.backoff_base * 2 ** (failed_attempts - 1), self.backoff_max)
        return (rng or random).uniform(0, ceiling)

    def should_retry(self, failed_attempts: int, retryable: bool) -> bool:
        """Whether a chunk that has failed ``failed_attempts`` times gets another attempt."""
        return retryable and failed_attempts < self.max_attempts


@dataclass(frozen=True)
class JobLimits:
    """The coordinator's share of the spec: time per invocation, retries, splitting, and how many errors a job tolerates."""

    timeout: float = 900.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    split_after: int = 2
    min_chunk_rows: int = 1
    batch_lane: bool = False
    batch_lane_timeout: float | None = None
    max_error_rate: float = 0.0
    max_dead_chunks: int = 0

    def deadline(self, lane: str, now: float) -> float:
        """When an invocation started ``now`` in ``lane`` must have reported."""
        if lane == "batch":
            return now + self.batch_lane_timeout if self.batch_lane_timeout else float("inf")
        return now + self.timeout
