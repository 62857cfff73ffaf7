"""Retry policy conformance: full-jitter delays within bounds, attempt limits, non-retryable errors; and, with real
workers, what a job retries (the per-chunk error budget, `no_retry_on`, input errors)."""

from __future__ import annotations

import os
import random
import sqlite3
import threading
import time
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st
from support.data import ids_dataset
from support.faults import assert_exact_output, ids_spec

import squall
import squall.api
from squall.limits import RetryPolicy


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


# --- what is retried, with real workers -------------------------------------------------------------------------


def _attempts(job_id: str) -> list[tuple[int, str, str]]:
    with sqlite3.connect(Path(os.environ["SQUALL_HOME"]) / "squall.db") as db:
        return db.execute(
            "SELECT chunk_id, outcome, error FROM attempts WHERE job_id=? ORDER BY chunk_id, attempt", (job_id,)
        ).fetchall()


def test_a_chunk_over_its_error_budget_fails_whole_and_is_retried_unless_no_retry_on_names_it(tmp_path, monkeypatch):
    """README, "Rows that raise": more than max(256, 5 % of the chunk) failing rows fail the invocation with
    ErrorBudgetExceeded, retried like any failure; `no_retry_on` sends it to the dead letters at once."""
    ids_dataset(tmp_path / "in", 1_000, row_group_size=1_000)
    base = dict(chunk_rows=1_000, batch_size=1_000, max_attempts=2, backoff_base=0.0, max_error_rate=0.5, max_dead_chunks=1)

    monkeypatch.setenv("FAULT_ROWS", "256")  # exactly the budget: the rows are isolated, the chunk succeeds
    within = squall.run(ids_spec(tmp_path, "raise_on_low_ids", output=str(tmp_path / "within"), **base))
    assert (within.state, within.rows_out, within.error_rows) == ("PARTIAL", 744, 256)
    assert_exact_output(tmp_path / "within", set(range(256, 1_000)))

    monkeypatch.setenv("FAULT_ROWS", "257")  # one more: the model, not the data, is blamed
    over = squall.run(ids_spec(tmp_path, "raise_on_low_ids", output=str(tmp_path / "over"), **base))
    assert (over.state, over.rows_out, over.error_rows, over.dead_chunks) == ("PARTIAL", 0, 0, 1)
    attempts = _attempts(over.job_id)
    assert [outcome for _, outcome, _ in attempts] == ["error", "error"]
    assert all(error.startswith("ErrorBudgetExceeded: more than 256 rows of one chunk failed") for _, _, error in attempts)
    assert not list((tmp_path / "over").glob("part-*")) and not (tmp_path / "over" / "_errors").exists()

    named = squall.run(ids_spec(tmp_path, "raise_on_low_ids", output=str(tmp_path / "named"),
                                **{**base, "max_attempts": 3}, no_retry_on=["ErrorBudgetExceeded"]))
    assert (named.state, named.dead_chunks) == ("PARTIAL", 1)
    assert [outcome for _, outcome, _ in _attempts(named.job_id)] == ["error"]  # 3 allowed, one made


def test_an_input_file_removed_after_planning_is_an_input_error_that_is_not_retried(tmp_path, monkeypatch):
    ids_dataset(tmp_path / "in", 3_000, files=3, row_group_size=1_000)
    monkeypatch.setenv("FAULT_SLEEP", "0.3")
    spec = ids_spec(tmp_path, "steady", workers=1, chunk_rows=1_000, batch_size=500, max_attempts=3, backoff_base=0.0,
                    job_id="vanished")
    removed: list[float] = []

    def remove_the_last_file_once_a_part_is_committed() -> None:
        deadline = time.monotonic() + 120
        while not list((tmp_path / "out").glob("part-*")) and time.monotonic() < deadline:
            time.sleep(0.02)
        (tmp_path / "in" / "ids-2.parquet").unlink()
        removed.append(time.time())

    thread = threading.Thread(target=remove_the_last_file_once_a_part_is_committed)
    thread.start()
    try:
        result = squall.run(spec)
    finally:
        thread.join()
    assert removed
    assert (result.state, result.rows_out, result.dead_chunks) == ("FAILED", 2_000, 1)
    assert_exact_output(tmp_path / "out", set(range(2_000)))
    (dead,) = squall.api.dead_letters("vanished")
    assert str(dead.pieces[0]["uri"]).endswith("ids-2.parquet")
    (attempt,) = dead.attempts  # max_attempts is 3: an InputError is not retried
    started, error = attempt["started_at"], attempt["error"]
    assert isinstance(started, float) and started >= removed[0]  # its one attempt ran after the file was gone
    assert isinstance(error, str) and error.startswith("InputError: ") and "ids-2.parquet: the input file was removed" in error
