"""The cost model: a price table applied to what a job measured (or what a plan expects).

A function platform bills each invocation's duration, rounded up to the
millisecond, times its memory size, plus a price per request; since August
2025 AWS Lambda also bills the init phase of a cold start, so a cold
start's init duration is billed with its invocation. The same work on one
on-demand VM costs its hourly price for as long as the VM needs to run the
job's compute (every invocation's duration and init) on its cores, billed
per second with a one-minute minimum, as EC2 bills Linux instances.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    from squall.spec import JobSpec
    from squall.invocations import InvocationRecord

# A Lambda function gets one full vCPU at 1,769 MB, which is what one local worker uses.
DEFAULT_MEMORY_MB = 1769
VM_MINIMUM_S = 60.0


@dataclass(frozen=True)
class PriceTable:
    """Prices in dollars: per GB-second and per million requests on a function platform, per hour for a VM of ``vm_cores``."""

    per_gb_second: float = 0.0000166667
    per_million_requests: float = 0.20
    vm_per_hour: float = 0.192
    vm_cores: int = 4

    @classmethod
    def of(cls, spec: JobSpec) -> PriceTable:
        """The prices a spec sets (defaults, file, environment or options)."""
        return cls(spec.price_per_gb_second, spec.price_per_million_requests, spec.vm_price_per_hour, spec.vm_cores)


def memory_size_mb(spec: JobSpec) -> int:
    """The memory size an invocation is billed at: the ``memory`` limit, else one vCPU's worth (1,769 MB)."""
    return spec.memory or DEFAULT_MEMORY_MB


def billed_ms(duration_s: float, init_s: float | None = None) -> int:
    """Billed duration in ms: duration plus init, rounded up to the millisecond.

    The sum is first rounded to the microsecond, the precision REPORT records show, so a record's
    billed duration is the ceiling of the durations it prints (and float noise such as
    ``0.2 * 1000 == 200.00000000000003`` is not billed as an extra millisecond).
    """
    return math.ceil(round((duration_s + (init_s or 0.0)) * 1000.0, 3))


@dataclass(frozen=True)
class CostEstimate:
    """What a job costs on a function platform and on one VM, and the quantities behind each figure."""

    requests: int
    billed_ms: int
    memory_mb: int
    compute_s: float
    prices: PriceTable

    @property
    def gb_seconds(self) -> float:
        """Billed GB-seconds: billed duration × memory size in GB (MB / 1024)."""
        return self.billed_ms / 1000.0 * self.memory_mb / 1024.0

    @property
    def function_compute(self) -> float:
        """Dollars for the GB-seconds."""
        return self.gb_seconds * self.prices.per_gb_second

    @property
    def function_requests(self) -> float:
        """Dollars for the requests."""
        return self.requests * self.prices.per_million_requests / 1_000_000

    @property
    def function_total(self) -> float:
        """Dollars as functions: GB-seconds plus requests."""
        return self.function_compute + self.function_requests

    @property
    def vm_seconds(self) -> float:
        """Seconds one VM would run: the compute spread over its cores, at least the billing minimum."""
        return max(VM_MINIMUM_S, self.compute_s / self.prices.vm_cores)

    @property
    def vm_total(self) -> float:
        """Dollars on one VM for :attr:`vm_seconds`."""
        return self.vm_seconds * self.prices.vm_per_hour / 3600.0

    def to_dict(self) -> dict[str, float | int]:
        """The quantities, the dollar figures and the prices, as plain data."""
        return {
            "requests": self.requests,
            "billed_ms": self.billed_ms,
            "memory_mb": self.memory_mb,
            "gb_seconds": round(self.gb_seconds, 6),
            "function_compute_usd": self.function_compute,
            "function_requests_usd": self.function_requests,
            "function_total_usd": self.function_total,
            "compute_s": round(self.compute_s, 6),
            "vm_seconds": round(self.vm_seconds, 3),
            "vm_total_usd": self.vm_total,
            "price_per_gb_second": self.prices.per_gb_second,
            "price_per_million_requests": self.prices.per_million_requests,
            "vm_price_per_hour": self.prices.vm_per_hour,
            "vm_cores": self.prices.vm_cores,
        }


def measured_cost(records: Iterable[InvocationRecord], memory_mb: int, prices: PriceTable) -> CostEstimate:
    """The cost of the invocations a job ran, every attempt billed as the platform would bill it."""
    requests = billed = 0
    compute = 0.0
    for record in records:
        requests += 1
        billed += billed_ms(record.duration_s, record.init_s)
        compute += record.duration_s + (record.init_s or 0.0)
    return CostEstimate(requests, billed, memory_mb, compute, prices)


def expected_cost(durations_s: Iterable[float], memory_mb: int, prices: PriceTable) -> CostEstimate:
    """The cost of invocations expected to take ``durations_s`` each (a plan)."""
    durations = list(durations_s)
    total = sum(billed_ms(d) for d in durations)
    return CostEstimate(len(durations), total, memory_mb, sum(durations), prices)


def dollars(amount: float) -> str:
    """A dollar amount readable at any scale ($0.000123, $1.23)."""
    if amount == 0 or amount >= 0.01:
        return f"${amount:,.2f}"
    return f"${amount:.6f}"
