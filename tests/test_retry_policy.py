"""Retry policy conformance: full-jitter delays within bounds, attempt limits, non-retryable errors."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from squall.retry import RetryPolicy


@given(
    base=st.floats(min_value=0, max_value=10),
    cap=st.floats(min_value=0, max_value=100),
    failures=st.integers(min_value=1, max_value=40),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_the_nth_delay_lies_in_zero_to_min_of_base_times_two_to_the_n_and_the_cap(base, cap, failures, seed):
    policy = RetryPolicy(max_attempts=50, backoff_base=base, backoff_max=cap)
    delay = policy.delay(failures, random.Random(seed))
    assert 0 <= delay <= min(base * 2 ** (failures - 1), cap)


def test_delays_are_jittered_across_the_whole_window():
    policy = RetryPolicy(backoff_base=1.0, backoff_max=8.0)
    rng = random.Random(1)
    delays = [policy.delay(4, rng) for _ in range(2_000)]
    assert max(delays) <= 8.0 and min(delays) >= 0
    assert sum(d < 2 for d in delays) > 300 and sum(d > 6 for d in delays) > 300


@given(max_attempts=st.integers(min_value=1, max_value=10), failures=st.integers(min_value=1, max_value=12))
def test_a_chunk_is_retried_only_while_attempts_remain_and_the_error_is_retryable(max_attempts, failures):
    policy = RetryPolicy(max_attempts=max_attempts)
    assert policy.should_retry(failures, retryable=True) == (failures < max_attempts)
    assert policy.should_retry(failures, retryable=False) is False


def test_one_attempt_means_no_retry():
    assert RetryPolicy(max_attempts=1).should_retry(1, retryable=True) is False
