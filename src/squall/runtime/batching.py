"""How many rows go to the model per call: a fixed number, or one each worker finds by measuring (``auto``).

With ``auto`` a worker starts small and doubles the batch while rows/s keeps
rising by more than ``GAIN``; it settles on the best size it saw, at the
first size that did not pay, at the largest candidate, or before a doubling
that would push the worker's memory past ``MEMORY_SHARE`` of its limit. The
first call is not timed (it pays for lazy initialisation), and each size is
timed over at least ``MIN_CALLS`` calls and ``MIN_SAMPLE_S`` seconds. The
worker keeps what it settled on for the rest of its life, across chunks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import pyarrow as pa

AUTO_SIZES = tuple(256 << i for i in range(9))  # 256 … 65,536
GAIN = 1.05
MIN_CALLS = 2
MIN_SAMPLE_S = 0.05
MEMORY_SHARE = 0.8


@dataclass
class _Sample:
    rows: int = 0
    seconds: float = 0.0
    calls: int = 0

    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


class BatchSizer:
    """The model-call size for one worker; ``fixed`` is a user's ``batch_size``, ``None`` means auto."""

    def __init__(self, fixed: int | None, memory_mb: int | None = None) -> None:
        self._fixed = fixed
        self._memory_mb = memory_mb
        self._index = 0
        self._sample = _Sample()
        self._best_size = AUTO_SIZES[0]
        self._best_rate = 0.0
        self._baseline_mb: float | None = None
        self._warmed = False
        self.settled = fixed is not None

    @property
    def current(self) -> int:
        """Rows per model call now."""
        if self._fixed is not None:
            return self._fixed
        return self._best_size if self.settled else AUTO_SIZES[self._index]

    @property
    def read_rows(self) -> int:
        """Rows per batch to ask the reader for (the largest size a call may take)."""
        return self._fixed if self._fixed is not None else AUTO_SIZES[-1]

    def slices(self, batch: pa.RecordBatch) -> Iterator[pa.RecordBatch]:
        """``batch`` cut into model calls of the current size (which may change between slices)."""
        start = 0
        while start < batch.num_rows:
            size = self.current
            yield batch.slice(start, size)
            start += size

    def observe(self, rows: int, seconds: float, rss_mb: float) -> None:
        """Record one model call of ``rows`` that took ``seconds``, the worker then holding ``rss_mb``."""
        if self.settled:
            return
        if not self._warmed:
            self._warmed = True
            self._baseline_mb = rss_mb
            return
        self._sample = _Sample(self._sample.rows + rows, self._sample.seconds + seconds, self._sample.calls + 1)
        if self._sample.calls < MIN_CALLS or self._sample.seconds < MIN_SAMPLE_S:
            return
        self._judge(self._sample.rate(), rss_mb)

    def _judge(self, rate: float, rss_mb: float) -> None:
        if rate <= self._best_rate * GAIN:
            self.settled = True
            return
        self._best_size, self._best_rate = AUTO_SIZES[self._index], rate
        if self._index + 1 == len(AUTO_SIZES) or not self._room_to_double(rss_mb):
            self.settled = True
            return
        self._index += 1
        self._sample = _Sample()

    def _room_to_double(self, rss_mb: float) -> bool:
        if self._memory_mb is None or self._baseline_mb is None:
            return True
        grown = max(0.0, rss_mb - self._baseline_mb)
        return rss_mb + grown < MEMORY_SHARE * self._memory_mb
