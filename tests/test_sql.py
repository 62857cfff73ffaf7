"""SQL queries as input and tables as output, on the real PostgreSQL server (127.0.0.1:5432) and on SQLite."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Iterator

import joblib
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import squall
from squall.api import plan
from squall.errors import InputError, OutputExistsError, SpecError
from squall.sql.drivers import connect, list_tables
from squall.sql.sink import TableOutput
from conftest import FEATURES, SQUALL, make_frame, run_cli
from test_faults import run_killing_workers

POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture(params=["postgresql", "sqlite"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database URL: the real PostgreSQL server, or a SQLite file."""
    yield POSTGRES if request.param == "postgresql" else f"sqlite:///{tmp_path}/squall-test.db"


@pytest.fixture
def names(database: str) -> Iterator[dict[str, str]]:
    """Table names of this test (unique: other suites share the server), dropped afterwards."""
    suffix = f"{os.getpid()}_{random.randrange(10**6)}"
    tables = {"input": f"rows_{suffix}", "output": f"preds_{suffix}"}
    yield tables
    with connect(database) as connection, connection.cursor() as cursor:
        present = list_tables(database, cursor)
        for table in present:
            if suffix in table:
                cursor.execute(f'DROP TABLE "{table}"')
        if "_squall_outputs" in present:
            cursor.execute(f"DELETE FROM _squall_outputs WHERE name = '{tables['output']}'")
        connection.commit()


def load_table(database: str, table: str, frame: pd.DataFrame) -> None:
    with connect(database) as connection, connection.cursor() as cursor:
        cursor.adbc_ingest(table, pa.Table.from_pandas(frame, preserve_index=False), mode="create")
        connection.commit()


def read_table(database: str, query: str) -> pd.DataFrame:
    with connect(database) as connection, connection.cursor() as cursor:
        cursor.execute(query)
        return cursor.fetch_arrow_table().to_pandas()


def output_state(database: str, table: str) -> tuple[int, bool, list[str]]:
    """(success flag, whether a manifest is stored, staging tables left) of an output table."""
    row = read_table(database, f"SELECT success, manifest FROM _squall_outputs WHERE name = '{table}'").iloc[0]
    with connect(database) as connection, connection.cursor() as cursor:
        staging = [t for t in list_tables(database, cursor) if t.startswith(f"_squall_{table}_")]
    return int(row["success"]), bool(row["manifest"]), staging


def test_predictions_from_a_query_into_a_table_equal_the_model(database, names, linear_model):
    frame = make_frame(5_000, seed=3)
    load_table(database, names["input"], frame)
    spec = squall.JobSpec(
        model=str(linear_model), input=[database], query=f"SELECT * FROM {names['input']}", partition_column="id",
        output=database, table=names["output"], key=["id"], features=FEATURES, method="predict_proba",
        workers=2, chunk_rows=600, batch_size=250,
    )
    result = squall.run(spec)
    assert (result.state, result.rows_in, result.rows_out, result.error_rows) == ("SUCCEEDED", 5_000, 5_000, 0)
    got = read_table(database, f"SELECT * FROM {names['output']}").set_index("id").sort_index()
    assert not got.index.duplicated().any()
    model = joblib.load(linear_model)
    want = model.predict_proba(frame.set_index("id").sort_index()[FEATURES])
    assert got.index.equals(pd.Index(np.arange(5_000), name="id"))
    np.testing.assert_allclose(got[[f"prediction_{c}" for c in model.classes_]].to_numpy(), want, rtol=1e-9)
    assert set(got["_squall_chunk"]) == {int(p.rsplit("-", 1)[-1]) for p in result.parts}
    assert output_state(database, names["output"]) == (1, True, [])


def test_a_query_is_cut_into_contiguous_key_ranges_from_its_min_and_max(database, names, linear_model):
    frame = make_frame(3_000, seed=1)
    frame["id"] = frame["id"] * 7 + 100  # sparse keys: ranges follow values, not row numbers
    load_table(database, names["input"], frame)
    spec = squall.JobSpec(
        model=str(linear_model), input=[database], query=f"SELECT * FROM {names['input']} WHERE id % 2 = 0",
        partition_column="id", output=database, table=names["output"], key=["id"], features=FEATURES,
        workers=1, chunk_rows=400,
    )
    job_plan = plan(spec)
    pieces = [piece for chunk in job_plan.chunks for piece in chunk.pieces]
    assert {piece.kind for piece in pieces} == {"keyrange"}
    assert pieces[0].start == 100 and pieces[-1].stop == 100 + 7 * 2_998 + 1
    assert all(a.stop == b.start for a, b in zip(pieces, pieces[1:]))
    assert job_plan.est_rows == 1_500 and len(job_plan.chunks) >= 3
    result = squall.run(spec)
    got = read_table(database, f"SELECT id FROM {names['output']}")
    assert (result.state, result.rows_out) == ("SUCCEEDED", 1_500)
    assert sorted(got["id"]) == sorted(frame["id"][frame["id"] % 2 == 0])


def test_workers_sigkilled_while_writing_a_table_leave_every_row_exactly_once(database, names, monkeypatch):
    ids = np.arange(20_000, dtype=np.int64)
    load_table(database, names["input"], pd.DataFrame({"id": ids, "id_copy": ids}))
    monkeypatch.setenv("FAULT_SLEEP", "0.05")
    spec = squall.JobSpec(
        model="faultmodels:steady", input=[database], query=f"SELECT * FROM {names['input']}", partition_column="id",
        output=database, table=names["output"], key=["id"], features=["id_copy"], workers=2, chunk_rows=1_000,
        batch_size=250, max_attempts=50, split_after=50, backoff_base=0.05,
    )
    result, kills = run_killing_workers(spec, seed=5, max_kills=8)
    assert len(kills) >= 3
    assert (result.state, result.rows_in, result.rows_out) == ("SUCCEEDED", 20_000, 20_000)
    got = read_table(database, f"SELECT id, prediction FROM {names['output']}")
    assert len(got) == 20_000 and not got["id"].duplicated().any()
    assert set(got["id"]) == set(range(20_000))
    np.testing.assert_array_equal(got.sort_values("id")["prediction"].to_numpy(), np.arange(20_000) * 2.0)
    assert output_state(database, names["output"]) == (1, True, [])


def test_a_coordinator_killed_mid_job_resumes_into_the_table_without_losing_or_doubling_rows(database, names):
    ids = np.arange(30_000, dtype=np.int64)
    load_table(database, names["input"], pd.DataFrame({"id": ids, "id_copy": ids}))
    env = {"FAULT_SLEEP": "0.05"}
    args = ["run", "--model", "faultmodels:steady", "--input", database, "--query", f"SELECT * FROM {names['input']}",
            "--partition-column", "id", "--output", database, "--table", names["output"], "--key", "id",
            "--features", "id_copy", "--workers", "2", "--chunk-rows", "1000", "--batch-size", "250",
            "--job-id", "sql-crash", "-q"]
    process = subprocess.Popen([*SQUALL, *args], env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    state = Path(os.environ["SQUALL_HOME"]) / "squall.db"
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
        if state.exists():
            with sqlite3.connect(state) as db:
                if db.execute("SELECT COUNT(*) FROM chunks WHERE state='done'").fetchone()[0] >= 6:
                    break
    assert process.poll() is None, process.stderr.read() if process.stderr else ""
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert output_state(database, names["output"])[0] == 0
    resumed = run_cli("resume", "sql-crash", "-q", env=env)
    assert resumed.returncode == 0, run_cli("status", "sql-crash").stdout + run_cli("dlq", "sql-crash").stdout
    got = read_table(database, f"SELECT id, prediction FROM {names['output']}")
    assert len(got) == 30_000 and set(got["id"]) == set(range(30_000))
    np.testing.assert_array_equal(got.sort_values("id")["prediction"].to_numpy(), np.arange(30_000) * 2.0)
    assert output_state(database, names["output"]) == (1, True, [])


def test_committing_a_chunk_again_replaces_its_rows_instead_of_adding_to_them(database, names):
    output = TableOutput(f"{database}#{names['output']}")
    output.claim("job-a", overwrite=False)
    for attempt, value in ((1, 1.0), (2, 2.0), (3, 3.0)):
        uri = output.attempt_part(4, attempt, "parquet")
        sink = output.part_sink(uri, "parquet")
        sink.write(pa.record_batch({"id": pa.array([1, 2, 3], pa.int64()), "prediction": pa.array([value] * 3)}))
        assert sink.close() == uri
        output.commit(uri, output.committed_part(4, "parquet"))
    rows = read_table(database, f"SELECT id, prediction, _squall_chunk FROM {names['output']}").sort_values("id")
    assert rows.to_dict("list") == {"id": [1, 2, 3], "prediction": [3.0, 3.0, 3.0], "_squall_chunk": [4, 4, 4]}
    assert output.remove_unlisted({"part-00004"}) == []
    assert output.remove_unlisted(set()) == ["part-00004"]
    assert read_table(database, f"SELECT COUNT(*) AS n FROM {names['output']}")["n"].tolist() == [0]


def test_a_losing_attempt_is_dropped_and_never_reaches_the_table(database, names):
    output = TableOutput(f"{database}#{names['output']}")
    output.claim("job-b", overwrite=False)
    loser = output.attempt_part(0, 1, "parquet")
    sink = output.part_sink(loser, "parquet")
    sink.write(pa.record_batch({"id": pa.array([9], pa.int64())}))
    sink.close()
    output.discard(loser)
    output.clear_attempts()
    assert output_state(database, names["output"])[2] == []
    with connect(database) as connection, connection.cursor() as cursor:
        assert names["output"] not in list_tables(database, cursor)


def test_a_table_holding_rows_squall_did_not_write_is_refused_without_overwrite(database, names, linear_model):
    load_table(database, names["input"], make_frame(200))
    load_table(database, names["output"], pd.DataFrame({"x": [1]}))
    spec = squall.JobSpec(model=str(linear_model), input=[database], query=f"SELECT * FROM {names['input']}",
                          partition_column="id", output=database, table=names["output"], key=["id"], features=FEATURES)
    with pytest.raises(OutputExistsError, match="rows squall did not write"):
        squall.run(spec)
    result = squall.run(spec.model_copy(update={"overwrite": True}))
    assert (result.state, result.rows_out) == ("SUCCEEDED", 200)


@pytest.mark.parametrize(
    "fields,message",
    [
        ({"partition_column": None}, "needs `query`"),
        ({"partition_column": "f0"}, "not an integer"),
        ({"partition_column": "nope"}, "has no column 'nope'"),
        ({"query": "SELECT * FROM no_such_table_anywhere"}, "the query failed"),
    ],
)
def test_a_bad_query_or_partition_column_fails_before_any_work_naming_what_to_change(
    database, names, linear_model, fields, message
):
    load_table(database, names["input"], make_frame(50))
    values = {"model": str(linear_model), "input": [database], "query": f"SELECT * FROM {names['input']}",
              "partition_column": "id", "output": database, "table": names["output"], "key": ["id"]}
    with pytest.raises(InputError, match=message):
        plan(squall.JobSpec(**{**values, **fields}))


def test_a_database_output_without_a_table_is_a_spec_error(linear_model, tmp_path):
    spec = squall.JobSpec(model=str(linear_model), input=[str(tmp_path)], output=POSTGRES)
    with pytest.raises(SpecError, match="set `table`"):
        squall.run(spec)
