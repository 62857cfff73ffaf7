"""The cost model's arithmetic, against figures computed by hand, and the plan forecast built on it."""

from __future__ import annotations

import os

import pytest
from support.data import ids_dataset

import squall
from squall import api
from squall.invocations import InvocationRecord
from squall.observe.cost import PriceTable, billed_ms, expected_cost, measured_cost
from squall.tuning.recommend import BatchRun, recommend


def _record(duration_s: float, init_s: float | None = None) -> InvocationRecord:
    return InvocationRecord("job", 0, 1, 0, "ok", 0.0, duration_s, init_s)


def test_billed_duration_rounds_each_invocation_up_to_the_millisecond_with_its_cold_start():
    assert billed_ms(0.2) == 200  # 0.2 * 1000 is 200.00000000000003 in floating point: not 201
    assert billed_ms(0.0001) == 1
    assert billed_ms(1.0001, 1.2) == 2201
    assert billed_ms(2.5) == 2500


def test_a_measured_run_costs_its_gb_seconds_and_requests_as_functions_and_its_compute_on_one_vm():
    records = [_record(1.0001, init_s=1.2), _record(2.5), _record(0.2)]
    cost = measured_cost(records, memory_mb=2048, prices=PriceTable())
    # by hand: 2201 + 2500 + 200 = 4901 ms billed; × 2 GB = 9.802 GB-s
    assert cost.billed_ms == 4901 and cost.requests == 3
    assert cost.gb_seconds == pytest.approx(9.802)
    assert cost.function_compute == pytest.approx(0.0001633669934)  # 9.802 × $0.0000166667
    assert cost.function_requests == pytest.approx(0.0000006)  # 3 × $0.20 / 1,000,000
    assert cost.function_total == pytest.approx(0.0001639669934)
    # 4.9001 s of compute on 4 cores is 1.23 s, under EC2's 60 s minimum: 60 s × $0.192/h
    assert cost.compute_s == pytest.approx(4.9001)
    assert cost.vm_seconds == 60.0 and cost.vm_total == pytest.approx(0.0032)


def test_a_large_job_is_priced_with_the_spec_s_own_price_table():
    spec = squall.JobSpec(
        model="m.joblib", input=["x"], output="o", memory=1024, price_per_gb_second=0.00001,
        price_per_million_requests=0.5, vm_price_per_hour=0.40, vm_cores=8,
    )
    prices = PriceTable.of(spec)
    cost = expected_cost([3.6] * 10_000, 1024, prices)  # 10,000 invocations of 3.6 s at 1 GB
    assert cost.billed_ms == 36_000_000 and cost.gb_seconds == pytest.approx(36_000)
    assert cost.function_total == pytest.approx(36_000 * 0.00001 + 10_000 * 0.5 / 1e6)  # $0.36 + $0.005
    assert cost.vm_seconds == pytest.approx(4_500) and cost.vm_total == pytest.approx(0.50)  # 36,000 s / 8 cores = 1.25 h


def test_recommendation_fits_the_timeout_with_half_of_it_to_spare_and_balances_eight_chunks_per_worker():
    runs = [BatchRun(1024, 50_000, 1.0, 300.0), BatchRun(4096, 50_000, 0.5, 320.0), BatchRun(16384, 50_000, 0.49, 400.0)]
    # 16384 is fastest but within 3 % of 4096, which wins for its memory: 100,000 rows/s, peak 320 MB
    bound_by_timeout = recommend(runs, 250.0, 10_000_000, timeout=2.0, cores=4, objective="time", prices=PriceTable())
    assert bound_by_timeout.batch_size == 4096 and bound_by_timeout.workers == 4
    assert bound_by_timeout.chunk_rows == 100_000  # 100,000 rows/s × 2 s × 0.5; balance would allow 312,500
    assert bound_by_timeout.memory == 576  # 320 × 1.5 + 64 = 544, rounded up to 64 MB
    assert bound_by_timeout.memory_per_row_kb == pytest.approx(70 * 1024 / 4096)
    bound_by_balance = recommend(runs, 250.0, 320_000, timeout=900.0, cores=4, objective="time", prices=PriceTable())
    assert bound_by_balance.chunk_rows == 10_000  # 320,000 rows / (4 workers × 8)
    assert bound_by_balance.batch_size == 4096  # 16384 rows would not fit in a chunk
    cheapest = recommend(runs, 250.0, 10_000_000, timeout=900.0, cores=4, objective="cost", prices=PriceTable())
    assert cheapest.batch_size == 4096  # MB-seconds per row: 576/100,000 beats 576/50,000 and 704/102,041


def test_plan_forecasts_from_the_last_measured_run_and_warns_about_timeouts_and_too_many_workers(tmp_path, monkeypatch):
    ids_dataset(tmp_path / "in", 4_000, row_group_size=500)
    base = dict(model="faultmodels:steady", input=[str(tmp_path / "in")], key=["id"], features=["id_copy"])
    unmeasured = api.forecast(api.plan(squall.JobSpec(**base, output=str(tmp_path / "o0"))), squall.JobSpec(**base, output="o0"))
    assert unmeasured.speed is None and unmeasured.cost is None and "no measured speed" in unmeasured.warnings[0]

    monkeypatch.setenv("FAULT_SLEEP", "0.1")  # 500 rows per call: at most 5,000 rows/s per worker
    measured = squall.run(squall.JobSpec(**base, output=str(tmp_path / "o1"), chunk_rows=500, batch_size=500, workers=2))
    ran = [i for i in api.report(measured.job_id).invocations if i.outcome == "ok"]
    cores = os.cpu_count() or 1
    spec = squall.JobSpec(**base, output=str(tmp_path / "o2"), chunk_rows=2_000, batch_size=500, workers=cores + 1, timeout=0.2)
    found = api.forecast(api.plan(spec), spec)
    assert found.speed is not None and found.speed.job_id == measured.job_id
    assert found.speed.rows_per_s == pytest.approx(4_000 / sum(i.duration_s for i in ran))  # rows over busy seconds
    assert found.speed.rows_per_s <= 5_000  # the model sleeps 0.1 s per 500 rows: no run is faster
    assert found.invocations == 2 and found.rows_per_chunk == (2_000, 2_000, 2_000)
    assert found.cost is not None and found.cost.requests == 2
    assert found.wall_s == pytest.approx(found.speed.startup_s + 4_000 / found.speed.rows_per_s / (cores + 1))
    assert any(f"{cores + 1} workers on {cores} cores" in w for w in found.warnings)
    timeout_warning = next(w for w in found.warnings if "timeout" in w)
    assert "2 chunk(s) will exceed the 0.2 s timeout" in timeout_warning and "--chunk-rows" in timeout_warning
