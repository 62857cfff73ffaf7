"""SQL queries as input and tables as output, on the real PostgreSQL server (127.0.0.1:5432) and on SQLite."""

from __future__ import annotations

import os
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import faultmodels
import joblib
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from support.cli import run_cli
from support.data import FEATURES, make_frame
from support.faults import done_chunks, kill_coordinator_mid_job, run_killing_workers

import squall
from squall.api import plan
from squall.errors import InputError, OutputExistsError, OutputUnreachable, SpecError
from squall.formats import sql as sql_format
from squall.formats.options import ReadOptions
from squall.io.output import Committed
from squall.plan.chunk import Piece
from squall.sql import sink as sink_module
from squall.sql.drivers import connect, list_tables, literal, quote
from squall.sql.sink import TableOutput, staging_prefix
from squall.store import JobStore

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
    drop_tables(database, suffix, tables["output"])


@pytest.fixture
def long_names() -> Iterator[dict[str, str]]:
    """PostgreSQL tables named as in issue 16: an output name of 54 bytes, over the 41 that the old
    staging names could take before PostgreSQL cut them at 63 bytes."""
    suffix = f"{random.randrange(10**6):06d}"
    tables = {"input": f"rows_{suffix}", "output": f"predictions_for_the_quarterly_churn_model_v3_eu_{suffix}"}
    yield tables
    drop_tables(POSTGRES, suffix, tables["output"])


def drop_tables(database: str, suffix: str, output: str) -> None:
    """Drop a test's tables, its output's staging tables, and its row in ``_squall_outputs``."""
    with connect(database) as connection, connection.cursor() as cursor:
        present = list_tables(database, cursor)
        for table in present:
            if suffix in table or table.startswith(staging_prefix(output)):
                cursor.execute(f'DROP TABLE "{table}"')
        if "_squall_outputs" in present:
            cursor.execute(f"DELETE FROM _squall_outputs WHERE name = '{output}'")
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
        staging = [t for t in list_tables(database, cursor) if t.startswith(staging_prefix(table))]
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
    frame = ids_table(database, names["input"], 20_000)
    monkeypatch.setenv("FAULT_SLEEP", "0.05")
    spec = squall.JobSpec(
        model="faultmodels:steady", input=[database], query=f"SELECT * FROM {names['input']}", partition_column="id",
        output=database, table=names["output"], key=["id"], features=["id_copy"], workers=2, chunk_rows=1_000,
        batch_size=250, max_attempts=50, split_after=50, backoff_base=0.05,
    )
    result, kills = run_killing_workers(spec, seed=5, max_kills=8)
    assert len(kills) >= 3
    assert (result.state, result.rows_in, result.rows_out) == ("SUCCEEDED", 20_000, 20_000)
    monkeypatch.delenv("FAULT_SLEEP")
    assert_table_is_the_models_output(database, names["output"], frame)
    assert output_state(database, names["output"]) == (1, True, [])


def ids_table(database: str, table: str, rows: int) -> pd.DataFrame:
    """A table of ``rows`` rows with an ``id`` key and the ``id_copy`` feature the fault models read."""
    ids = np.arange(rows, dtype=np.int64)
    frame = pd.DataFrame({"id": ids, "id_copy": ids})
    load_table(database, table, frame)
    return frame


def ids_job_args(database: str, tables: dict[str, str], job_id: str, model: str = "faultmodels:steady") -> list[str]:
    return ["run", "--model", model, "--input", database, "--query", f"SELECT * FROM {tables['input']}",
            "--partition-column", "id", "--output", database, "--table", tables["output"], "--key", "id",
            "--features", "id_copy", "--workers", "2", "--chunk-rows", "1000", "--batch-size", "250",
            "--job-id", job_id, "-q"]


def assert_table_is_the_models_output(database: str, table: str, frame: pd.DataFrame) -> None:
    """Every row exactly once, each prediction the fault model's own (``faultmodels.steady``)."""
    got = read_table(database, f"SELECT id, prediction FROM {table}").sort_values("id")
    assert len(got) == len(frame) and not got["id"].duplicated().any()
    np.testing.assert_array_equal(got["id"].to_numpy(), frame["id"].to_numpy())
    np.testing.assert_array_equal(got["prediction"].to_numpy(), faultmodels.steady(frame))


def test_a_coordinator_killed_mid_job_resumes_into_the_table_without_losing_or_doubling_rows(database, names):
    frame = ids_table(database, names["input"], 30_000)
    env = {"FAULT_SLEEP": "0.05"}
    kill_coordinator_mid_job(ids_job_args(database, names, "sql-crash"), env, "sql-crash", after_chunks=6)
    assert done_chunks("sql-crash") < 30
    assert output_state(database, names["output"])[0] == 0
    resumed = run_cli("resume", "sql-crash", "-q", env=env)
    assert resumed.returncode == 0, run_cli("status", "sql-crash").stdout + run_cli("dlq", "sql-crash").stdout
    assert_table_is_the_models_output(database, names["output"], frame)
    assert output_state(database, names["output"]) == (1, True, [])


def test_a_long_table_name_resumed_after_a_coordinator_kill_holds_every_row_once(long_names):
    """Issue 16, defect 1: staging names cut at 63 bytes were shared by chunks, rows were lost, and the
    resumed job reported SUCCEEDED with a manifest that counted 20,000 rows."""
    frame = ids_table(POSTGRES, long_names["input"], 20_000)
    env = {"FAULT_SLEEP": "0.05"}
    kill_coordinator_mid_job(ids_job_args(POSTGRES, long_names, "sql-long"), env, "sql-long", after_chunks=4)
    assert done_chunks("sql-long") < 20
    resumed = run_cli("resume", "sql-long", "-q", env=env)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr + run_cli("status", "sql-long").stdout
    assert_table_is_the_models_output(POSTGRES, long_names["output"], frame)
    manifest = TableOutput(f"{POSTGRES}#{long_names['output']}").manifest()
    assert manifest is not None and manifest["state"] == "SUCCEEDED"
    assert manifest["rows"]["written"] == 20_000 and manifest["rows"]["reconciled"]
    assert sum(part["rows"] for part in manifest["parts"]) == 20_000
    assert output_state(POSTGRES, long_names["output"]) == (1, True, [])


def test_a_table_name_postgresql_would_cut_is_refused_before_any_work(long_names):
    ids_table(POSTGRES, long_names["input"], 100)
    too_long = long_names["output"] + "_abc"  # 58 bytes, and `<table>_errors` 65: over PostgreSQL's 63
    with pytest.raises(SpecError, match=r"`table` .* too long: postgresql keeps names of at most 63 bytes"):
        squall.run(squall.JobSpec(
            model="faultmodels:steady", input=[POSTGRES], query=f"SELECT * FROM {long_names['input']}",
            partition_column="id", output=POSTGRES, table=too_long, key=["id"], features=["id_copy"],
        ))
    with connect(POSTGRES) as connection, connection.cursor() as cursor:
        assert not {t for t in list_tables(POSTGRES, cursor) if t.startswith((too_long[:50], staging_prefix(too_long)))}
    assert squall.jobs() == []


def test_committing_a_chunk_again_replaces_its_rows_instead_of_adding_to_them(database, names):
    output = TableOutput(f"{database}#{names['output']}")
    output.claim("job-a", overwrite=False)
    for attempt, value in ((1, 1.0), (2, 2.0), (3, 3.0)):
        uri = output.attempt_part(4, attempt, "parquet")
        sink = output.part_sink(uri, "parquet")
        sink.write(pa.record_batch({"id": pa.array([1, 2, 3], pa.int64()), "prediction": pa.array([value] * 3)}))
        assert sink.close() == uri
        final = output.committed_part(4, "parquet")
        assert output.commit(uri, final) == Committed(final, 3)  # counted in the table, in the commit
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
    with pytest.raises(SpecError, match="set `table`"):  # refused as the spec is built, before any work
        squall.JobSpec(model=str(linear_model), input=[str(tmp_path)], output=POSTGRES)


@pytest.mark.parametrize(
    "query",
    [
        "SELECT * FROM {t} WHERE 1 = 1) AS squall_q WHERE id >= 0 OR 1 = 1 --",
        "SELECT * FROM {t} WHERE id >= 0) AS q UNION ALL SELECT * FROM {t} --",
        "SELECT * FROM {t}; DELETE FROM {t}",
        "SELECT * FROM {t} WHERE 'it' <> '",
    ],
)
def test_a_query_that_escapes_its_subquery_or_holds_two_statements_is_refused_before_any_work(
    database, names, linear_model, query
):
    """Issue 16, defect 7: such a query made every chunk read the whole table (9,000 rows of 3,000, SUCCEEDED)."""
    load_table(database, names["input"], make_frame(3_000))
    spec = squall.JobSpec(
        model=str(linear_model), input=[database], query=query.format(t=names["input"]), partition_column="id",
        output=database, table=names["output"], key=["id"], features=FEATURES, chunk_rows=1_000,
    )
    with pytest.raises(SpecError, match="`query`"):
        squall.run(spec)
    assert read_table(database, f"SELECT COUNT(*) AS n FROM {names['input']}")["n"].tolist() == [3_000]
    with connect(database) as connection, connection.cursor() as cursor:
        assert names["output"] not in list_tables(database, cursor)


def test_a_query_with_parentheses_in_strings_comments_and_a_final_semicolon_reads_every_row_once(
    database, names, linear_model
):
    frame = make_frame(3_000, seed=4)
    load_table(database, names["input"], frame)
    query = f"SELECT * FROM {names['input']} /* not ( a paren */ WHERE 'a)' <> \"b\" OR 1 = 1 -- a ) too\n;"
    if database.startswith("postgresql"):
        query = query.replace('\"b\"', "'b'")  # PostgreSQL reads "b" as a column name
    spec = squall.JobSpec(
        model=str(linear_model), input=[database], query=query, partition_column="id", output=database,
        table=names["output"], key=["id"], features=FEATURES, method="predict_proba", chunk_rows=1_000,
    )
    result = squall.run(spec)
    assert (result.state, result.rows_in, result.rows_out) == ("SUCCEEDED", 3_000, 3_000)
    got = read_table(database, f"SELECT * FROM {names['output']}").set_index("id").sort_index()
    model = joblib.load(linear_model)
    assert got.index.equals(pd.Index(np.arange(3_000), name="id"))
    want = model.predict_proba(frame.set_index("id").sort_index()[FEATURES])
    np.testing.assert_allclose(got[[f"prediction_{c}" for c in model.classes_]].to_numpy(), want, rtol=1e-9)


def test_a_chunk_that_reads_rows_outside_its_key_range_fails_naming_the_range(database, names, monkeypatch):
    """The second guard behind the query check: a chunk checks the partition values it read.

    No query that passes the check escapes its subquery (the check would refuse it), so here the
    statement squall sends is replaced, in this process, by what an escaped query would make it."""
    ids_table(database, names["input"], 3_000)
    monkeypatch.setattr(sql_format, "chunk_query", lambda query, column, selected, piece: f"SELECT {selected} FROM ({query}) AS q")
    options = ReadOptions(query=f"SELECT * FROM {names['input']}", partition_column="id")
    piece = Piece(database, "keyrange", 1_000, 2_000)
    with pytest.raises(InputError, match=r"in \[1000, 2000\) read rows with id from 0 to \d+"):
        list(sql_format.SqlFormat().read(piece, options, 10_000, []))


def test_rows_whose_partition_value_is_null_are_refused_at_planning_instead_of_read_by_no_chunk(database, names):
    frame = pd.DataFrame({"id": pd.array([1, 2, None, 4], dtype="Int64"), "id_copy": [1, 2, 3, 4]})
    load_table(database, names["input"], frame)
    spec = squall.JobSpec(
        model="faultmodels:steady", input=[database], query=f"SELECT * FROM {names['input']}", partition_column="id",
        output=database, table=names["output"], key=["id"], features=["id_copy"],
    )
    with pytest.raises(InputError, match="1 row\\(s\\) of the query have NULL in partition_column 'id'"):
        plan(spec)


@dataclass
class Termination:
    """The connection ``terminate_while_blocked`` ended: its pid, and the lock on the table it was waiting for."""

    pid: int | None = None
    lock_mode: str = ""
    terminated: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def terminate_while_blocked(
    table: str, ready: Callable[[], bool], times: int = 1
) -> tuple[threading.Thread, Termination]:
    """A thread that, once ``ready()``, locks ``table`` from a second connection, waits until a squall
    connection is blocked on that lock in the middle of a statement, ends that connection with
    ``pg_terminate_backend`` (``times`` times, each the next connection that blocks), and releases the lock."""
    found = Termination()

    def run() -> None:
        try:
            deadline = time.time() + 120
            while not ready():
                assert time.time() < deadline, "the job never got far enough to be interrupted"
                time.sleep(0.05)
            with connect(POSTGRES) as locker, locker.cursor() as cursor:
                cursor.execute(f'LOCK TABLE "{table}" IN ACCESS EXCLUSIVE MODE')
                while len(found.terminated) < times:
                    assert time.time() < deadline, "no squall connection blocked on the lock"
                    time.sleep(0.05)
                    cursor.execute(  # a lock requested and not granted: a statement on the table is in flight
                        "SELECT pid, mode FROM pg_locks "
                        f"WHERE NOT granted AND relation = to_regclass({literal(quote(table))}) "
                        "AND pid <> pg_backend_pid()"
                    )
                    blocked = [row for row in cursor.fetchall() if row[0] not in found.terminated]
                    if blocked:
                        found.pid, found.lock_mode = blocked[0]
                        cursor.execute(f"SELECT pg_terminate_backend({int(found.pid)})")
                        assert cursor.fetchone()[0] is True
                        found.terminated.append(int(found.pid))
                locker.rollback()
        except BaseException as exc:  # reported by the test, which asserts on `errors`
            found.errors.append(repr(exc))

    thread = threading.Thread(target=run)
    thread.start()
    return thread, found


def test_a_connection_terminated_while_a_chunk_reads_is_retried_and_every_row_lands_once(long_names, monkeypatch):
    frame = ids_table(POSTGRES, long_names["input"], 12_000)
    monkeypatch.setenv("FAULT_SLEEP", "0.05")
    spec = squall.JobSpec(
        model="faultmodels:steady", input=[POSTGRES], query=f"SELECT * FROM {long_names['input']}",
        partition_column="id", output=POSTGRES, table=long_names["output"], key=["id"], features=["id_copy"],
        workers=2, chunk_rows=1_000, batch_size=250, backoff_base=0.05, job_id="pg-read",
    )
    thread, ended = terminate_while_blocked(long_names["input"], lambda: done_chunks("pg-read") >= 2)
    result = squall.run(spec)
    thread.join()
    assert ended.errors == [] and ended.pid is not None
    assert (result.state, result.rows_in, result.rows_out) == ("SUCCEEDED", 12_000, 12_000)
    store = JobStore(Path(os.environ["SQUALL_HOME"]))
    errors = [str(record.error) for record in store.invocations("pg-read") if record.outcome == "error"]
    store.close()
    assert any("terminating connection due to administrator command" in error for error in errors), errors
    monkeypatch.delenv("FAULT_SLEEP")
    assert_table_is_the_models_output(POSTGRES, long_names["output"], frame)
    assert output_state(POSTGRES, long_names["output"]) == (1, True, [])


def test_a_connection_terminated_while_the_coordinator_commits_loses_and_doubles_no_row(long_names, monkeypatch):
    frame = ids_table(POSTGRES, long_names["input"], 12_000)
    monkeypatch.setenv("FAULT_SLEEP", "0.05")
    output = long_names["output"]
    spec = squall.JobSpec(
        model="faultmodels:steady", input=[POSTGRES], query=f"SELECT * FROM {long_names['input']}",
        partition_column="id", output=POSTGRES, table=output, key=["id"], features=["id_copy"],
        workers=2, chunk_rows=1_000, batch_size=250, job_id="pg-commit",
    )
    thread, ended = terminate_while_blocked(output, lambda: done_chunks("pg-commit") >= 2)
    result = squall.run(spec)
    thread.join()
    # Only the coordinator's commit touches the output table while chunks run: its statement was cut mid-way.
    assert ended.errors == [] and ended.pid is not None and ended.lock_mode
    assert (result.state, result.rows_in, result.rows_out) == ("SUCCEEDED", 12_000, 12_000)
    monkeypatch.delenv("FAULT_SLEEP")
    assert_table_is_the_models_output(POSTGRES, output, frame)
    assert output_state(POSTGRES, output) == (1, True, [])


def test_a_commit_whose_connection_keeps_being_terminated_stops_the_job_and_resume_finishes_it(long_names, monkeypatch):
    frame = ids_table(POSTGRES, long_names["input"], 6_000)
    monkeypatch.setenv("FAULT_SLEEP", "0.05")
    output = long_names["output"]
    spec = squall.JobSpec(
        model="faultmodels:steady", input=[POSTGRES], query=f"SELECT * FROM {long_names['input']}",
        partition_column="id", output=POSTGRES, table=output, key=["id"], features=["id_copy"],
        workers=2, chunk_rows=1_000, batch_size=250, job_id="pg-down",
    )
    attempts = sink_module.RECONNECTS + 1
    thread, ended = terminate_while_blocked(output, lambda: done_chunks("pg-down") >= 1, times=attempts)
    with pytest.raises(OutputUnreachable, match=f"the connection failed {attempts} times .*`squall resume` finishes"):
        squall.run(spec)
    thread.join()
    assert ended.errors == [] and len(ended.terminated) == attempts
    assert 1 <= done_chunks("pg-down") < 6 and output_state(POSTGRES, output)[0] == 0
    result = squall.resume("pg-down")
    assert (result.state, result.rows_in, result.rows_out) == ("SUCCEEDED", 6_000, 6_000)
    monkeypatch.delenv("FAULT_SLEEP")
    assert_table_is_the_models_output(POSTGRES, output, frame)
    assert output_state(POSTGRES, output) == (1, True, [])
