"""When to retry a failed attempt, and how long to wait: exponential backoff with full jitter."""

from __future__ import annotations

import random
from dataclasses import dataclass


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
