"""One output schema per job: every part of an output is read together by pandas, Polars and DuckDB.

The first committed part fixes the job's output schema; later parts are cast
to it safely, and a value the cast would change becomes an error row of step
``output``. The models are the fault models in ``faultmodels.py`` (real worker
processes); the expected values are those models' own output, cast.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import duckdb
import faultmodels
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support.cli import run_cli
from support.data import ids_dataset
from support.faults import ids_spec, kill_coordinator_mid_job

import squall
from squall.io.output_schema import schema_from_text
from squall.store import SCHEMA_VERSION, JobStore

ROWS = 8_000


def model_output(model, frame: pd.DataFrame, batch_rows: int) -> np.ndarray:
    """The model's own predictions, called on the batches squall gives it (ids aligned to ``batch_rows``)."""
    return np.concatenate([np.asarray(model(frame.iloc[i : i + batch_rows]), dtype=object) for i in range(0, len(frame), batch_rows)])


def ids_frame(rows: int = ROWS) -> pd.DataFrame:
    ids = np.arange(rows, dtype=np.int64)
    return pd.DataFrame({"id": ids, "id_copy": ids})


def part_schemas(output: Path) -> set[str]:
    return {pq.read_schema(path).remove_metadata().to_string() for path in output.glob("part-*.parquet")}


def read_errors(output: Path) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(path) for path in sorted((output / "_errors").glob("part-*.parquet"))])


def test_parts_of_a_model_returning_int64_and_float64_read_as_one_table_in_pandas_polars_and_duckdb(tmp_path, monkeypatch):
    """Issue 16, defect 5: such parts could not be read together."""
    ids_dataset(tmp_path / "in", ROWS, row_group_size=1_000)
    monkeypatch.setenv("FAULT_SLEEP", "0.05")  # both workers take a first chunk before either commits
    spec = ids_spec(tmp_path, "int_or_float_by_thousand", workers=2, chunk_rows=1_000, batch_size=250, backoff_base=0.05)
    result = squall.run(spec)
    assert (result.state, result.rows_in, result.rows_out, result.error_rows) == ("SUCCEEDED", ROWS, ROWS, 0)
    output = tmp_path / "out"
    assert len(part_schemas(output)) == 1
    job_type = pq.read_schema(output / "part-00000.parquet").field("prediction").type
    monkeypatch.delenv("FAULT_SLEEP")
    want = pd.Series(model_output(faultmodels.int_or_float_by_thousand, ids_frame(), 250).astype(job_type.to_pandas_dtype()))
    assert {type(v) for v in model_output(faultmodels.int_or_float_by_thousand, ids_frame(), 1_000)} == {int, float}

    by_pandas = pd.read_parquet(output).sort_values("id", ignore_index=True)
    by_polars = pl.read_parquet(f"{output}/*.parquet").sort("id").to_pandas()
    relation = duckdb.sql(f"SELECT id, prediction FROM read_parquet('{output}/*.parquet') ORDER BY id")
    assert relation is not None  # a query has a result
    by_duckdb = relation.df()
    for got in (by_pandas, by_polars, by_duckdb):
        assert len(got) == ROWS and list(got["id"]) == list(range(ROWS))
        assert got["prediction"].dtype == job_type.to_pandas_dtype()
        np.testing.assert_array_equal(got["prediction"].to_numpy(), want.to_numpy())


@pytest.mark.parametrize("chunk_rows", [1_000, 4_000], ids=["across-chunks", "within-one-chunk"])
def test_a_value_that_cannot_be_cast_safely_to_the_job_type_becomes_an_error_row_with_the_reason(tmp_path, monkeypatch, chunk_rows):
    rows = 4_000
    ids_dataset(tmp_path / "in", rows, row_group_size=1_000)
    monkeypatch.setenv("FAULT_INT_BELOW", "1000")  # ids 0-999 (the first chunk, or its first batches) are int64
    spec = ids_spec(tmp_path, "int_then_float", workers=1, chunk_rows=chunk_rows, batch_size=250, max_error_rate=0.2)
    result = squall.run(spec)
    frame = ids_frame(rows)
    own = pd.Series(model_output(faultmodels.int_then_float, frame, 250))
    castable = own.map(lambda value: float(value).is_integer())
    assert (~castable).sum() == 300 and set(frame["id"][~castable] % 10) == {7}
    assert (result.state, result.rows_in, result.rows_out, result.error_rows) == ("PARTIAL", rows, 3_700, 300)

    output = tmp_path / "out"
    got = pd.read_parquet(output).sort_values("id", ignore_index=True)
    assert got["prediction"].dtype == np.int64 and part_schemas(output) == {"id: int64\nprediction: int64"}
    assert list(got["id"]) == list(frame["id"][castable])
    np.testing.assert_array_equal(got["prediction"].to_numpy(), own[castable].astype(np.int64).to_numpy())
    errors = read_errors(output).sort_values("_offset", ignore_index=True)
    assert list(errors["key"].map(lambda key: json.loads(key)["id"])) == list(frame["id"][~castable])
    assert set(errors["step"]) == {"output"} and set(errors["error_type"]) == {"OutputTypeError"}
    first = errors["message"].iloc[0]
    assert first == "column 'prediction': 2014.5 (double) cannot be cast safely to the job's output type int64"


def test_a_resumed_job_keeps_the_schema_its_first_parts_fixed(tmp_path):
    ids_dataset(tmp_path / "in", ROWS, row_group_size=1_000)
    args = ["run", "--model", "faultmodels:int_then_float", "--input", str(tmp_path / "in"), "--output",
            str(tmp_path / "out"), "--key", "id", "--features", "id_copy", "--workers", "1", "--chunk-rows", "1000",
            "--batch-size", "250", "--max-error-rate", "0.2", "--job-id", "typed", "-q"]
    kill_coordinator_mid_job(args, {"FAULT_SLEEP": "0.05"}, "typed", after_chunks=2)  # every batch int64
    store = JobStore(Path(os.environ["SQUALL_HOME"]))
    try:
        first_run = {row for d in store.done_chunks("typed") for p in d.chunk.pieces for row in range(p.start * 1_000, p.stop * 1_000)}
        fixed = store.output_schema("typed")
    finally:
        store.close()
    assert 2_000 <= len(first_run) < ROWS and fixed is not None
    assert schema_from_text(fixed).field("prediction").type == pa.int64()

    resumed = run_cli("resume", "typed", "-q", env={"FAULT_INT_BELOW": "0"})  # now every batch float64
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    output = tmp_path / "out"
    assert part_schemas(output) == {"id: int64\nprediction: int64"}
    got = pd.read_parquet(output).sort_values("id", ignore_index=True)
    errors = read_errors(output)
    error_ids = {json.loads(key)["id"] for key in errors["key"]}
    assert error_ids == {i for i in range(ROWS) if i not in first_run and i % 10 == 7}
    assert list(got["id"]) == sorted(set(range(ROWS)) - error_ids)
    np.testing.assert_array_equal(got["prediction"].to_numpy(), got["id"].to_numpy() * 2)


SCHEMA_4 = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    task TEXT NOT NULL,
    output TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    chunks_total INTEGER NOT NULL DEFAULT 0,
    est_rows INTEGER NOT NULL DEFAULT 0,
    cold_starts INTEGER NOT NULL DEFAULT 0,
    worker_starts INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    ledger TEXT,
    message TEXT
);
CREATE TABLE IF NOT EXISTS chunks (
    job_id TEXT NOT NULL,
    chunk_id INTEGER NOT NULL,
    descriptor TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    attempt_base INTEGER NOT NULL DEFAULT 0,
    kills INTEGER NOT NULL DEFAULT 0,
    lane TEXT NOT NULL DEFAULT 'function',
    kind TEXT NOT NULL DEFAULT 'data',
    errors_superseded INTEGER NOT NULL DEFAULT 0,
    parent INTEGER,
    not_before REAL NOT NULL DEFAULT 0,
    worker INTEGER,
    rows_in INTEGER NOT NULL DEFAULT 0,
    rows_out INTEGER NOT NULL DEFAULT 0,
    error_rows INTEGER NOT NULL DEFAULT 0,
    part TEXT,
    error_part TEXT,
    finished_at REAL,
    PRIMARY KEY (job_id, chunk_id)
);
CREATE INDEX IF NOT EXISTS chunks_queue ON chunks (job_id, state, chunk_id);
CREATE TABLE IF NOT EXISTS attempts (
    job_id TEXT NOT NULL,
    chunk_id INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    worker INTEGER,
    started_at REAL NOT NULL,
    finished_at REAL,
    outcome TEXT,
    error TEXT,
    report TEXT,
    init_s REAL,
    PRIMARY KEY (job_id, chunk_id, attempt)
);
"""


def test_a_schema_4_store_opens_with_its_jobs_and_a_place_for_their_output_schema(tmp_path):
    db = sqlite3.connect(tmp_path / "squall.db")
    db.executescript(SCHEMA_4)
    db.execute("INSERT INTO meta VALUES ('schema_version', '4')")
    db.execute("INSERT INTO jobs (job_id, spec, task, output, state, created_at) VALUES ('old', '{}', '{}', '/o', 'RUNNING', 1.0)")
    db.commit()
    db.close()
    store = JobStore(tmp_path)
    try:
        assert store.job("old").state == "RUNNING" and store.output_schema("old") is None
    finally:
        store.close()
    version = sqlite3.connect(tmp_path / "squall.db").execute("SELECT value FROM meta WHERE name='schema_version'").fetchone()
    assert version == (str(SCHEMA_VERSION),) and SCHEMA_VERSION >= 5  # upgraded past 5, the output schema's
