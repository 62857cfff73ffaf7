"""The coordinator's rules, run through the whole pipeline on the in-process :class:`StubBackend`.

Every invocation here is real (a WarmInstance on the real model reads its chunk
and writes its part); only what goes wrong is scripted, attempt by attempt,
so each rule is proved quickly and the same way every run: retries wait for
their backoff, dead letters, ``no_retry_on``, splitting, the batch lane, late
and duplicate reports, cancel, start failures and the schema race. The output
is compared with the model's own predictions every time.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Callable

import fsspec
import numpy as np
import pandas as pd
import pytest
from support.data import ids_dataset, read_output
from support.expect import expected_proba
from support.s3 import filesystem, read_s3_output
from support.s3server import S3Server
from support.stub_backend import StubBackend

import squall
from squall.errors import InputError, JobCancelled, ModelLoadError
from squall.io import layout
from squall.observe.events import JobListener
from squall.runtime.task import InvocationReport
from squall.store import JobStore

ROWS, CHUNK = 2_000, 500  # four chunks: chunk c holds ids [c * 500, (c + 1) * 500)


@pytest.fixture
def data(dataset: Callable[..., tuple[Path, pd.DataFrame]]) -> tuple[Path, pd.DataFrame]:
    return dataset("parquet", rows=ROWS, row_group_size=CHUNK)


def spec_of(model: Path, folder: Path, output: str, **fields: object) -> squall.JobSpec:
    return squall.JobSpec.model_validate({
        "model": str(model), "input": [str(folder)], "output": output, "key": ["id"], "method": "predict_proba",
        "workers": 2, "chunk_rows": CHUNK, "backoff_base": 0.0, **fields,
    })


def assert_predicted(got: pd.DataFrame, model: Path, frame: pd.DataFrame, chunks: set[int] | None = None) -> None:
    """``got`` holds each row of ``chunks`` (default: all) exactly once, as the model predicts it."""
    assert not got["id"].duplicated().any()
    rows = frame if chunks is None else frame[(frame["id"] // CHUNK).isin(chunks)]
    got = got.set_index("id").sort_index()
    want = expected_proba(model, rows)
    assert got.index.equals(want.index)
    np.testing.assert_allclose(got[want.columns].to_numpy(), want.to_numpy(), rtol=1e-12)


def attempts(job_id: str, chunk_id: int) -> list[dict]:
    with JobStore.at() as store:
        return store.attempts(job_id, chunk_id)


def chunk_column(job_id: str, chunk_id: int, column: str) -> float:
    """A column of the store's row for the chunk (``not_before``, ``kills``), read as any reader of the store would."""
    with sqlite3.connect(Path(os.environ["SQUALL_HOME"]) / "squall.db") as db:
        row = db.execute(f"SELECT {column} FROM chunks WHERE job_id=? AND chunk_id=?", (job_id, chunk_id)).fetchone()
    return float(row[0])


class Recorder(JobListener):
    """Every report and failure the coordinator announced; ``check`` runs on each, in the coordinator's thread."""

    def __init__(self, check: Callable[[str, tuple], None] = lambda kind, what: None) -> None:
        self.finished: list[tuple[InvocationReport, bool]] = []
        self.failed: list[tuple[int, int, str, str, bool]] = []
        self._check = check

    def invocation_finished(self, report: InvocationReport, committed: bool) -> None:
        self.finished.append((report, committed))
        self._check("finished", (report, committed))

    def chunk_failed(self, job_id: str, chunk_id: int, attempt: int, outcome: str, error: str, dead: bool) -> None:
        self.failed.append((chunk_id, attempt, outcome, error, dead))
        self._check("failed", (job_id, chunk_id, attempt, outcome, error, dead))


def test_a_failed_attempt_is_retried_once_its_backoff_has_passed(data, linear_model, tmp_path):
    folder, frame = data
    backend = StubBackend()
    backend.fail(0, 1, RuntimeError("the first try breaks"))
    backend.fail(0, 2, RuntimeError("the second try breaks"))
    retry_at: dict[int, tuple[float, float]] = {}  # failed attempt -> (when it failed, when its retry may start)

    def note(kind: str, what: tuple) -> None:
        if kind == "failed":
            job_id, chunk_id, attempt, *_ = what
            retry_at[attempt] = (time.time(), chunk_column(job_id, chunk_id, "not_before"))

    spec = spec_of(linear_model, folder, str(tmp_path / "out"), max_attempts=3, backoff_base=0.2, backoff_max=0.3)
    result = squall.run(spec, listeners=[Recorder(note)], backend=backend)

    assert (result.state, result.rows_out) == ("SUCCEEDED", ROWS)
    assert_predicted(read_output(tmp_path / "out"), linear_model, frame)
    assert [a["outcome"] for a in attempts(result.job_id, 0)] == ["error", "error", "ok"]
    assert "RuntimeError: the first try breaks" in attempts(result.job_id, 0)[0]["error"]
    started = {s.attempt: s.at for s in backend.submitted if s.chunk_id == 0}
    for failed, ceiling in ((1, 0.2), (2, 0.3)):  # full jitter in [0, min(base * 2^(n-1), max)]
        failed_at, allowed_at = retry_at[failed]
        assert failed_at - 0.05 <= allowed_at <= failed_at + ceiling
        assert started[failed + 1] >= allowed_at, "a retry started before its backoff had passed"


def test_a_chunk_that_fails_max_attempts_times_is_dead_lettered_and_the_rest_is_committed(data, linear_model, tmp_path):
    folder, frame = data
    backend = StubBackend()
    for attempt in (1, 2, 3):
        backend.fail(1, attempt, RuntimeError(f"try {attempt} breaks"))
    spec = spec_of(linear_model, folder, str(tmp_path / "out"), max_attempts=3, max_dead_chunks=1)
    result = squall.run(spec, backend=backend)

    assert (result.state, result.dead_chunks, result.rows_out) == ("PARTIAL", 1, ROWS - CHUNK)
    assert_predicted(read_output(tmp_path / "out"), linear_model, frame, chunks={0, 2, 3})
    (dead,) = squall.api.dead_letters(result.job_id)
    assert dead.chunk_id == 1 and [a["outcome"] for a in dead.attempts] == ["error"] * 3
    assert [s.attempt for s in backend.submitted if s.chunk_id == 1] == [1, 2, 3]


def test_an_error_no_retry_on_names_and_a_not_retryable_error_are_dead_lettered_at_once(data, linear_model, tmp_path):
    folder, frame = data
    backend = StubBackend()
    backend.fail(0, 1, KeyError("named in no_retry_on"))
    backend.fail(1, 1, InputError("the input file was removed"))  # NotRetryable
    backend.fail(2, 1, ValueError("any other error is retried"))
    spec = spec_of(linear_model, folder, str(tmp_path / "out"), max_attempts=3, max_dead_chunks=2, no_retry_on=["KeyError"])
    result = squall.run(spec, backend=backend)

    assert (result.state, result.dead_chunks) == ("PARTIAL", 2)
    assert sorted(d.chunk_id for d in squall.api.dead_letters(result.job_id)) == [0, 1]
    tries = {c: [s.attempt for s in backend.submitted if s.chunk_id == c] for c in range(4)}
    assert tries == {0: [1], 1: [1], 2: [1, 2], 3: [1]}
    assert_predicted(read_output(tmp_path / "out"), linear_model, frame, chunks={2, 3})


def test_a_chunk_killed_split_after_times_is_split_in_two_that_cover_its_rows(data, linear_model, tmp_path):
    folder, frame = data
    backend = StubBackend()
    backend.hang(0, 1)  # killed at its deadline: a timeout
    backend.die(0, 2, cause="memory")  # its worker dies after writing its part
    discarded: list[bool] = []
    output = tmp_path / "out"

    def attempt_file_gone(kind: str, what: tuple) -> None:
        if kind == "failed" and what[1:3] == (0, 2):
            discarded.append(not Path(layout.attempt_part(str(output), 0, 2, "parquet")).exists())

    spec = spec_of(linear_model, folder, str(output), timeout=0.5, split_after=2, max_attempts=5)
    recorder = Recorder(attempt_file_gone)
    result = squall.run(spec, listeners=[recorder], backend=backend)

    assert (result.state, result.rows_out) == ("SUCCEEDED", ROWS)
    assert_predicted(read_output(output), linear_model, frame)
    (lost,) = backend.lost
    assert (lost.chunk_id, lost.attempt, lost.part) == (0, 2, layout.attempt_part(str(output), 0, 2, "parquet"))
    assert [(a["outcome"], a["error"].split(":")[0]) for a in attempts(result.job_id, 0)] == [("timeout", "the invocation ran past the 0.5 s time limit"), ("split", "memory")]
    assert backend.killed == [next(s.worker for s in backend.submitted if (s.chunk_id, s.attempt) == (0, 1))]
    assert discarded == [True], "the dead worker's attempt file was not discarded before the chunk was split"
    children = sorted({s.chunk_id for s in backend.submitted} - {0, 1, 2, 3})
    assert children == [4, 5] and result.chunks == 5  # chunk 0 became two, counted as one more
    assert "split into chunks 4 and 5" in recorder.failed[-1][3]


def test_a_chunk_that_cannot_be_split_goes_to_the_batch_lane_and_runs_there_without_the_time_limit(data, linear_model, tmp_path):
    folder, frame = data
    backend = StubBackend()
    backend.hang(0, 1)
    backend.hang(0, 2)
    backend.hold(0, 3, seconds=1.5)  # three times the function lane's limit
    spec = spec_of(linear_model, folder, str(tmp_path / "out"), timeout=0.5, split_after=2, min_chunk_rows=CHUNK, batch_lane=True)
    result = squall.run(spec, backend=backend)

    assert (result.state, result.rows_out) == ("SUCCEEDED", ROWS)
    assert_predicted(read_output(tmp_path / "out"), linear_model, frame)
    assert [a["outcome"] for a in attempts(result.job_id, 0)] == ["timeout", "to-batch-lane", "ok"]
    assert len(backend.killed) == 2, "the batch lane's attempt was killed"
    third = attempts(result.job_id, 0)[2]
    assert third["finished_at"] - third["started_at"] >= 1.5


def test_a_late_report_of_a_killed_attempt_is_discarded_and_never_replaces_the_committed_part(data, linear_model, tmp_path):
    folder, frame = data
    output = tmp_path / "out"
    backend = StubBackend()
    backend.hold(0, 1, until=(0, 2))  # reports only after the retry did, though its worker was killed
    late_file: list[bool] = []

    def file_of_late_attempt(kind: str, what: tuple) -> None:
        if kind == "finished" and (what[0].chunk_id, what[0].attempt) == (0, 1):
            late_file.append(Path(layout.attempt_part(str(output), 0, 1, "parquet")).exists())

    recorder = Recorder(file_of_late_attempt)
    spec = spec_of(linear_model, folder, str(output), workers=1, timeout=0.5, max_attempts=2)
    result = squall.run(spec, listeners=[recorder], backend=backend)

    assert (result.state, result.rows_out) == ("SUCCEEDED", ROWS)
    assert [a["outcome"] for a in attempts(result.job_id, 0)] == ["timeout", "ok"]
    late = [(r.attempt, committed) for r, committed in recorder.finished if r.chunk_id == 0]
    assert late == [(2, True), (1, False)]
    assert [r.part for r in backend.delivered if (r.chunk_id, r.attempt) == (0, 1)], "the late attempt wrote no part"
    assert late_file == [False], "the late attempt's file was kept"
    assert sorted(p.name for p in output.glob("part-*")) == [f"part-{c:05d}.parquet" for c in range(4)]
    assert_predicted(read_output(output), linear_model, frame)


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_duplicate_delivery_of_the_winning_report_changes_nothing(where, data, linear_model, tmp_path, request):
    folder, frame = data
    if where == "s3":
        s3: S3Server = request.getfixturevalue("s3")
        output = f"s3://{request.getfixturevalue('bucket')}/out"
        fs = filesystem(s3)
    else:
        output, fs = str(tmp_path / "out"), fsspec.filesystem("file")
    backend = StubBackend()
    backend.duplicate(0, 1)
    recorder = Recorder()
    spec = spec_of(linear_model, folder, output, endpoint_url=s3.endpoint if where == "s3" else None)
    result = squall.run(spec, listeners=[recorder], backend=backend)

    assert (result.state, result.rows_out) == ("SUCCEEDED", ROWS)
    assert [committed for r, committed in recorder.finished if r.chunk_id == 0] == [True, False]
    got = read_s3_output(fs, output.removeprefix("s3://")) if where == "s3" else read_output(Path(output))
    assert_predicted(got, linear_model, frame)


def test_reports_that_arrive_together_on_an_object_store_are_committed_at_once_and_each_exactly_once(
    dataset, linear_model, s3, bucket
):
    folder, frame = dataset("parquet", rows=12 * CHUNK, row_group_size=CHUNK)
    backend = StubBackend()
    backend.duplicate(5, 1)  # delivered twice in the batch of chunks 4-7
    # With four workers the stub reports chunks 4-7 together, after chunk 0 (committed alone) fixed the schema.
    final_names = {f"/{bucket}/out/part-{c:05d}.parquet" for c in range(4, 8)}
    copies = lambda request: request.method == "PUT" and request.path in final_names  # noqa: E731
    spec = spec_of(linear_model, folder, f"s3://{bucket}/out", workers=4, endpoint_url=s3.endpoint)
    with s3.traffic.held(copies, 4, timeout_s=20):
        result = squall.run(spec, backend=backend)

    assert s3.traffic.most_at_once(copies) == 4, "the commits of reports that arrived together ran one at a time"
    assert len(s3.traffic.requests(copies)) == 4, "a part was committed twice"
    assert (result.state, result.rows_out) == ("SUCCEEDED", 12 * CHUNK)
    fs = filesystem(s3)
    names = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(f"{bucket}/out", detail=False))
    assert [n for n in names if n.startswith("part-")] == [f"part-{c:05d}.parquet" for c in range(12)]
    assert "_tmp" not in names, "an attempt's object was left after its copy"
    assert_predicted(read_s3_output(fs, f"{bucket}/out"), linear_model, frame)


def test_a_cancel_stops_the_job_as_cancelled_and_keeps_what_was_committed(data, linear_model, tmp_path):
    folder, frame = data
    backend = StubBackend()
    backend.hang(3, 1)  # the job cannot finish before the cancel is seen

    def cancel_after_the_first_commit(kind: str, what: tuple) -> None:
        if kind == "finished" and what[1] and what[0].chunk_id == 0:
            squall.api.cancel(what[0].job_id)

    recorder = Recorder(cancel_after_the_first_commit)
    spec = spec_of(linear_model, folder, str(tmp_path / "out"), workers=1, timeout=600)
    with pytest.raises(JobCancelled):
        squall.run(spec, listeners=[recorder], job_id="cancelled", backend=backend)

    job = squall.api.status("cancelled").job
    assert job.state == "CANCELLED" and "cancelled" in (job.message or "")
    assert not (tmp_path / "out" / layout.SUCCESS_FILE).exists()
    committed = {report.chunk_id for report, done in recorder.finished if done}
    assert 0 in committed and 3 not in committed
    assert_predicted(read_output(tmp_path / "out"), linear_model, frame, chunks=committed)


def test_workers_that_keep_dying_while_starting_fail_the_job_with_a_model_load_error(data, linear_model, tmp_path):
    folder, _ = data
    backend = StubBackend(starting_deaths=1_000)
    with pytest.raises(ModelLoadError, match="workers keep dying while starting"):
        squall.run(spec_of(linear_model, folder, str(tmp_path / "out")), job_id="dying", backend=backend)
    assert backend.worker_starts() == 2 + 2 * 3  # two workers, and one after each of the six deaths
    job = squall.api.status("dying").job
    assert job.state == "FAILED" and "workers keep dying while starting" in (job.message or "")
    assert not backend.submitted


def test_a_model_that_cannot_be_loaded_fails_the_job_with_a_model_load_error(data, tmp_path):
    folder, _ = data
    broken = tmp_path / "broken.joblib"
    broken.write_bytes(b"not a pickle at all")
    with pytest.raises(ModelLoadError, match="the model could not be loaded"):
        squall.run(spec_of(broken, folder, str(tmp_path / "out")), job_id="broken", backend=StubBackend())
    job = squall.api.status("broken").job
    assert job.state == "FAILED" and "the model could not be loaded" in (job.message or "")


def test_two_first_parts_of_different_types_commit_one_schema_and_the_other_is_retried_in_it_at_no_cost(tmp_path):
    ids_dataset(tmp_path / "in", 4_000, row_group_size=1_000)
    backend = StubBackend()
    # ids 0-999 predict int64 and 1000-1999 float64: the two first chunks run at once, before either commits.
    spec = squall.JobSpec(
        model="faultmodels:int_or_float_by_thousand", input=[str(tmp_path / "in")], output=str(tmp_path / "out"),
        key=["id"], features=["id_copy"], workers=2, chunk_rows=1_000, max_attempts=1,  # a retry that cost an attempt would dead-letter
    )
    result = squall.run(spec, backend=backend)

    assert (result.state, result.rows_out, result.dead_chunks) == ("SUCCEEDED", 4_000, 0)
    first_two = [(s.chunk_id, s.attempt, s.output_schema) for s in backend.submitted[:2]]
    assert first_two == [(0, 1, None), (1, 1, None)]
    refused, retried = attempts(result.job_id, 1)
    assert refused["outcome"] == "error" and "is not the job's output schema" in refused["error"]
    assert retried["outcome"] == "ok"
    with JobStore.at() as store:
        job_schema = store.output_schema(result.job_id)
    assert [s.output_schema for s in backend.submitted if (s.chunk_id, s.attempt) == (1, 2)] == [job_schema]
    got = read_output(tmp_path / "out")
    assert got["prediction"].dtype == np.int64 and sorted(got["id"]) == list(range(4_000))
    np.testing.assert_array_equal(got["prediction"].to_numpy(), got["id"].to_numpy() * 2)
    assert chunk_column(result.job_id, 1, "kills") == 0
