"""Inputs and outputs on a real S3-compatible server (moto, on loopback): same predictions, ranged reads, no partial results."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import fsspec
import joblib
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support.cli import SQUALL, run_cli
from support.data import FEATURES, make_frame
from support.expect import expected_proba
from support.faults import run_killing_workers
from support.s3server import serve
from support.s3 import (
    assert_committed_exactly,
    filesystem,
    read_s3_output,
    upload_frame,
)

import squall


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_predictions_from_s3_to_s3_equal_the_model_with_ranged_reads_only(fmt, s3, bucket, linear_model):
    fs = filesystem(s3)
    frames = [make_frame(2_500, seed=i, start=i * 2_500) for i in range(2)]
    for index, frame in enumerate(frames):
        upload_frame(fs, frame, f"{bucket}/in/data-{index}.{fmt}", fmt)
    spec = squall.JobSpec(
        model=str(linear_model), input=[f"s3://{bucket}/in/*.{fmt}"], output=f"s3://{bucket}/out",
        key=["id"], method="predict_proba", workers=2, chunk_rows=700, batch_size=300, endpoint_url=s3.endpoint,
    )
    result = squall.run(spec)
    assert (result.state, result.rows_in, result.rows_out, result.error_rows) == ("SUCCEEDED", 5_000, 5_000, 0)
    manifest = assert_committed_exactly(fs, f"{bucket}/out")
    assert manifest["rows"]["reconciled"] and sum(p["rows"] for p in manifest["parts"]) == 5_000
    got = read_s3_output(fs, f"{bucket}/out").set_index("id").sort_index()
    assert not got.index.duplicated().any()
    want = expected_proba(linear_model, pd.concat(frames, ignore_index=True))
    assert got.index.equals(want.index)
    np.testing.assert_allclose(got[want.columns].to_numpy(), want.to_numpy(), rtol=1e-9, atol=1e-12)
    input_gets = s3.log.object_gets(f"/{bucket}/in/")
    assert len(input_gets) >= result.chunks
    assert all(status == 206 for _, status in input_gets), "an input object was downloaded whole"


def test_each_job_reaches_the_store_aws_endpoint_url_names_when_it_runs(s3, bucket, linear_model, monkeypatch):
    """Regression: fsspec caches a filesystem by its options; with the endpoint only in the environment, a job run
    after the variable changed (in a service, or a test session) was handed a client of the earlier endpoint. Here
    that endpoint is a second server, stopped before the second job (moto's servers in one process share their
    data, so only a stopped one tells them apart)."""
    fs = filesystem(s3)
    upload_frame(fs, make_frame(300, seed=0), f"{bucket}/in/data.parquet", "parquet")
    servers = contextlib.ExitStack()
    other = servers.enter_context(contextlib.contextmanager(serve)())
    for server, output in ((other, "first"), (s3, "second")):
        monkeypatch.setenv("AWS_ENDPOINT_URL", server.endpoint)
        spec = squall.JobSpec(model=str(linear_model), input=[f"s3://{bucket}/in/*.parquet"],
                              output=f"s3://{bucket}/{output}", key=["id"], method="predict_proba", workers=1)
        assert squall.run(spec).state == "SUCCEEDED"
        assert_committed_exactly(fs, f"{bucket}/{output}")
        servers.close()  # the first job's server is gone before the second job starts


def test_a_job_planned_over_a_bucket_prefix_reads_every_object_under_it(s3, bucket, linear_model):
    fs = filesystem(s3)
    for index in range(3):
        upload_frame(fs, make_frame(400, seed=index, start=index * 400), f"{bucket}/in/day={index}/rows.parquet", "parquet")
    fs.pipe_file(f"{bucket}/in/_notes.txt", b"not an input")
    spec = squall.JobSpec(
        model=str(linear_model), input=[f"s3://{bucket}/in/"], output=f"s3://{bucket}/out", key=["id"], workers=1,
        storage_options={"endpoint_url": s3.endpoint},
    )
    job_plan = squall.api.plan(spec)
    assert [info.file.uri for info in job_plan.files] == [f"s3://{bucket}/in/day={i}/rows.parquet" for i in range(3)]
    assert job_plan.est_rows == 1_200
    result = squall.run(spec)
    assert (result.state, result.rows_out) == ("SUCCEEDED", 1_200)
    assert sorted(read_s3_output(fs, f"{bucket}/out")["id"]) == list(range(1_200))


def ids_to_s3(fs: fsspec.AbstractFileSystem, bucket: str, rows: int, files: int) -> None:
    per_file = rows // files
    for index in range(files):
        ids = np.arange(index * per_file, (index + 1) * per_file, dtype=np.int64)
        buffer = io.BytesIO()
        pq.write_table(pa.table({"id": ids, "id_copy": ids}), buffer, row_group_size=500)
        fs.pipe_file(f"{bucket}/in/ids-{index}.parquet", buffer.getvalue())


def assert_ids_exactly_once(fs: fsspec.AbstractFileSystem, output: str, rows: int) -> None:
    assert_committed_exactly(fs, output)
    got = read_s3_output(fs, output)
    assert not got["id"].duplicated().any()
    assert set(got["id"]) == set(range(rows))
    np.testing.assert_array_equal(got["prediction"].to_numpy(), got["id"].to_numpy() * 2.0)


def test_workers_sigkilled_mid_job_on_s3_lose_and_duplicate_nothing(s3, bucket, monkeypatch):
    fs = filesystem(s3)
    ids_to_s3(fs, bucket, 30_000, files=3)
    monkeypatch.setenv("FAULT_SLEEP", "0.05")
    spec = squall.JobSpec(
        model="faultmodels:steady", input=[f"s3://{bucket}/in"], output=f"s3://{bucket}/out", key=["id"],
        features=["id_copy"], workers=2, chunk_rows=1_000, batch_size=250, max_attempts=50, split_after=50,
        backoff_base=0.05, endpoint_url=s3.endpoint,
    )
    result, kills = run_killing_workers(spec, seed=11, max_kills=8)
    assert len(kills) >= 3
    assert (result.state, result.rows_in, result.rows_out) == ("SUCCEEDED", 30_000, 30_000)
    assert_ids_exactly_once(fs, f"{bucket}/out", 30_000)


def chunks_done(database: Path) -> int:
    """Chunks the job has committed so far, as its store says (0 before the store exists)."""
    if not database.exists():
        return 0
    try:
        with sqlite3.connect(database) as db:
            return int(db.execute("SELECT COUNT(*) FROM chunks WHERE state='done'").fetchone()[0])
    except sqlite3.OperationalError:  # the store is being created
        return 0


def test_a_coordinator_killed_mid_job_on_s3_resumes_without_losing_or_doubling_rows(s3, bucket, tmp_path):
    fs = filesystem(s3)
    ids_to_s3(fs, bucket, 30_000, files=2)
    env = {"FAULT_SLEEP": "0.05", "AWS_ENDPOINT_URL": s3.endpoint}
    args = ["run", "--model", "faultmodels:steady", "--input", f"s3://{bucket}/in/*.parquet",
            "--output", f"s3://{bucket}/out", "--key", "id", "--features", "id_copy", "--workers", "2",
            "--chunk-rows", "1000", "--batch-size", "250", "--job-id", "s3-crash", "-q"]
    process = subprocess.Popen([*SQUALL, *args], env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    database = Path(os.environ["SQUALL_HOME"]) / "squall.db"
    deadline = time.monotonic() + 120
    while chunks_done(database) < 6:
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        assert time.monotonic() < deadline, "the job committed fewer than 6 chunks in 120 s"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert 6 <= chunks_done(database) < 30, "the kill did not land mid-job"
    assert not fs.exists(f"{bucket}/out/_SUCCESS")
    resumed = run_cli("resume", "s3-crash", "-q", env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert_ids_exactly_once(fs, f"{bucket}/out", 30_000)


def test_an_s3_output_is_refused_when_it_holds_files_squall_did_not_write(s3, bucket, linear_model):
    fs = filesystem(s3)
    upload_frame(fs, make_frame(100), f"{bucket}/in/a.parquet", "parquet")
    fs.pipe_file(f"{bucket}/out/report.txt", b"someone else's")
    spec = squall.JobSpec(model=str(linear_model), input=[f"s3://{bucket}/in"], output=f"s3://{bucket}/out",
                          key=["id"], features=FEATURES, endpoint_url=s3.endpoint)
    with pytest.raises(squall.errors.OutputExistsError, match="files squall did not write"):
        squall.run(spec)


def test_the_cli_takes_the_endpoint_and_storage_options_as_options(s3, bucket, linear_model):
    fs = filesystem(s3)
    frame = make_frame(1_500, seed=4)
    upload_frame(fs, frame, f"{bucket}/in/rows.csv", "csv")
    done = run_cli(
        "run", "--model", str(linear_model), "--input", f"s3://{bucket}/in/rows.csv", "--output", f"s3://{bucket}/out",
        "--key", "id", "--workers", "1", "--chunk-rows", "400", "--endpoint-url", s3.endpoint,
        "--storage-options", '{"config_kwargs": {"retries": {"max_attempts": 2}}}', "-q",
        env={"AWS_ENDPOINT_URL": "http://127.0.0.1:9"},  # the option wins over the environment
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1].startswith("SUCCEEDED 1500 rows")
    assert_committed_exactly(fs, f"{bucket}/out")
    got = read_s3_output(fs, f"{bucket}/out").set_index("id").sort_index()
    model = joblib.load(linear_model)
    np.testing.assert_array_equal(got["prediction"].to_numpy(), model.predict(frame[FEATURES]))


def test_a_pickled_model_on_s3_loads_only_when_trusted_and_pinned(s3, bucket, linear_model, tmp_path):
    fs = filesystem(s3)
    fs.put_file(str(linear_model), f"{bucket}/models/linear.joblib")
    frame = make_frame(800, seed=5)
    upload_frame(fs, frame, f"{bucket}/in/data.parquet", "parquet")
    args = ["run", "--model", f"s3://{bucket}/models/linear.joblib", "--input", f"s3://{bucket}/in/",
            "--output", str(tmp_path / "out"), "--key", "id", "--method", "predict_proba", "--endpoint-url", s3.endpoint]
    env = {"AWS_ENDPOINT_URL": ""}  # the job's --endpoint-url must reach the model's first read, in every process

    refused = run_cli(*args, env=env)
    assert refused.returncode == 2 and "--trust-model" in refused.stderr
    wrong_pin = run_cli(*args, "--trust-model", "--model-sha256", "0" * 64, env=env)
    assert wrong_pin.returncode == 2 and "but --model-sha256 pins 0000" in wrong_pin.stderr.replace("\n", "")
    pin = hashlib.sha256(linear_model.read_bytes()).hexdigest()
    trusted = run_cli(*args, "--trust-model", "--model-sha256", pin, "--overwrite", env=env)
    assert trusted.returncode == 0, trusted.stderr
    got = pd.concat([pd.read_parquet(p) for p in sorted((tmp_path / "out").glob("part-*.parquet"))]).set_index("id").sort_index()
    np.testing.assert_allclose(got.to_numpy(), joblib.load(linear_model).predict_proba(frame[FEATURES]), rtol=1e-12)
