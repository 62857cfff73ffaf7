"""Property: whatever fails when (crashes, hangs, bad rows, per chunk and attempt), reconciliation holds
and no row is written twice. Each example is a real job with real worker processes."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.data import ids_dataset, read_output

import squall

CHUNK_ROWS = 200
CHUNKS = 3
MAX_ATTEMPTS = 2

schedules = st.dictionaries(
    keys=st.integers(min_value=0, max_value=CHUNKS - 1).map(str),
    values=st.lists(st.sampled_from(["ok", "crash", "hang", "rows"]), max_size=MAX_ATTEMPTS),
    max_size=CHUNKS,
)


def expected_outcome(schedule: dict[str, list[str]]) -> tuple[set[int], set[int], set[int]]:
    """(predicted ids, error ids, ids in dead chunks) that the schedule must produce."""
    predicted, errors, dead = set(), set(), set()
    for chunk in range(CHUNKS):
        ids = set(range(chunk * CHUNK_ROWS, (chunk + 1) * CHUNK_ROWS))
        plan = (schedule.get(str(chunk), []) + ["ok"] * MAX_ATTEMPTS)[:MAX_ATTEMPTS]
        first_success = next((kind for kind in plan if kind in ("ok", "rows")), None)
        if first_success is None:
            dead |= ids
        elif first_success == "rows":
            errors |= {i for i in ids if i % 5 == 0}
            predicted |= {i for i in ids if i % 5}
        else:
            predicted |= ids
    return predicted, errors, dead


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(schedule=schedules)
def test_reconciliation_holds_and_no_row_is_written_twice_for_any_failure_schedule(schedule, monkeypatch):
    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder)
        ids_dataset(base / "in", CHUNK_ROWS * CHUNKS, row_group_size=CHUNK_ROWS)
        (base / "schedule.json").write_text(json.dumps(schedule))
        monkeypatch.setenv("FAULT_SCHEDULE", str(base / "schedule.json"))
        monkeypatch.setenv("FAULT_CHUNK_ROWS", str(CHUNK_ROWS))
        spec = squall.JobSpec(
            model="faultmodels:scheduled", input=[str(base / "in")], output=str(base / "out"), key=["id"],
            features=["id_copy"], chunk_rows=CHUNK_ROWS, batch_size=CHUNK_ROWS, workers=2, timeout=1.5,
            max_attempts=MAX_ATTEMPTS, split_after=99, backoff_base=0.0, max_error_rate=1.0, max_dead_chunks=CHUNKS,
            state_dir=str(base / "state"),
        )
        result = squall.run(spec)
        predicted, errors, dead = expected_outcome(schedule)
        got = read_output(base / "out")
        assert not got.empty or not predicted
        written = list(got["id"]) if not got.empty else []
        assert len(written) == len(set(written)) and set(written) == predicted
        error_ids = []
        if (base / "out" / "_errors").exists():
            error_ids = [json.loads(k)["id"] for k in pq.read_table(base / "out" / "_errors").column("key").to_pylist()]
        assert len(error_ids) == len(set(error_ids)) and set(error_ids) == errors
        manifest = json.loads((base / "out" / "_manifest.json").read_text())
        rows = manifest["rows"]
        assert rows["reconciled"]
        assert rows["read"] + rows["rows_in_dead_chunks_estimated"] == CHUNK_ROWS * CHUNKS
        assert (rows["written"], rows["errors"], rows["rows_in_dead_chunks_estimated"]) == (len(predicted), len(errors), len(dead))
        assert result.state == ("SUCCEEDED" if not errors and not dead else "PARTIAL")
        os.environ.pop("FAULT_SCHEDULE", None)
