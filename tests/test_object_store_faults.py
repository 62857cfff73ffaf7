"""Jobs on an S3 that fails as production S3 does: a fault-injecting proxy (:mod:`s3faults`) in front of the
loopback S3 server answers 503 SlowDown, 500 InternalError or resets the connection on a fraction of
requests, or is down for some keys. Every job ends with every row exactly once and equal to the model's
own predictions, or fails with the reason and finishes on `squall resume`.
"""

from __future__ import annotations

import io
import json
import random
from functools import partial
from typing import Callable, Iterator

import fsspec
import joblib
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support.cli import run_cli
from support.data import FEATURES, make_frame
from support.s3faults import FaultPlan, serve_faulty
from support.s3server import S3Server, serve_with_credentials

import squall
from squall import api
from squall.errors import SquallError

ROWS_PER_FILE = 3_000
FILES = 3


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    yield from serve_with_credentials()


def direct(s3: S3Server) -> fsspec.AbstractFileSystem:
    """The store without the proxy: how the test writes inputs and checks outputs."""
    return fsspec.filesystem("s3", endpoint_url=s3.endpoint, skip_instance_cache=True, use_listings_cache=False)


@pytest.fixture
def bucket(s3: S3Server, request: pytest.FixtureRequest) -> str:
    name = "f-" + request.node.name.lower().replace("_", "-")[:40].strip("-[]") + f"-{random.randrange(10**6)}"
    direct(s3).mkdir(name)
    return name


def upload_inputs(s3: S3Server, bucket: str, fmt: str) -> pd.DataFrame:
    fs, frames = direct(s3), []
    for index in range(FILES):
        frame = make_frame(ROWS_PER_FILE, seed=index, start=index * ROWS_PER_FILE)
        buffer = io.BytesIO()
        if fmt == "parquet":
            pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), buffer, row_group_size=500)
        else:
            frame.to_csv(buffer, index=False)
        fs.pipe_file(f"{bucket}/in/data-{index}.{fmt}", buffer.getvalue())
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def assert_every_row_once_as_the_model_predicts(s3: S3Server, output: str, fmt: str, frame: pd.DataFrame, model_path) -> None:
    """_SUCCESS; the prefix holds exactly the manifest's parts, each with its rows; every id once, predicted
    exactly as the model's own ``predict_proba``."""
    fs = direct(s3)
    names = {p.rsplit("/", 1)[-1] for p in fs.ls(output, detail=False)}
    assert "_SUCCESS" in names
    manifest = json.loads(fs.cat_file(f"{output}/_manifest.json"))
    assert manifest["rows"]["reconciled"] and manifest["dead_chunks"] == []
    assert sorted(n for n in names if n.startswith("part-")) == sorted(part["path"] for part in manifest["parts"])
    read = pd.read_parquet if fmt == "parquet" else pd.read_csv
    parts = [read(io.BytesIO(fs.cat_file(f"{output}/{part['path']}"))) for part in manifest["parts"]]
    assert [len(p) for p in parts] == [part["rows"] for part in manifest["parts"]]
    got = pd.concat(parts, ignore_index=True).set_index("id")
    assert not got.index.duplicated().any() and len(got) == len(frame)
    model = joblib.load(model_path)
    want = pd.DataFrame(model.predict_proba(frame[FEATURES]), index=frame["id"],
                        columns=[f"prediction_{c}" for c in model.classes_]).sort_index()
    got = got.sort_index()
    assert got.index.equals(want.index)
    np.testing.assert_allclose(got[want.columns].to_numpy(), want.to_numpy(), rtol=1e-12)


def run_to_the_end(spec: squall.JobSpec, job_id: str) -> list[str]:
    """Run the job; while it fails, finish it (`redrive` its dead chunks, else `resume`). Returns each
    failure's reason."""
    reasons: list[str] = []
    failure = why_not_succeeded(partial(squall.run, spec, job_id=job_id))
    while failure is not None:
        assert failure, "the job failed without saying why"
        reasons.append(failure)
        assert len(reasons) <= 3, f"the job keeps failing: {reasons}"
        dead = squall.status(job_id).counts.count("dead")
        failure = why_not_succeeded(partial(squall.redrive if dead else squall.resume, job_id))
    return reasons


def why_not_succeeded(start: Callable[[], squall.JobResult]) -> str | None:
    """``None`` when the job ``start`` runs SUCCEEDED, else the reason it gives."""
    try:
        result = start()
    except SquallError as exc:
        return str(exc)
    return None if result.state == "SUCCEEDED" else result.message or ""


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_a_store_that_throttles_errs_and_drops_connections_still_gets_every_row_once(fmt, s3, bucket, linear_model):
    frame = upload_inputs(s3, bucket, fmt)
    plan = FaultPlan(rate=0.25, seed=16)
    with serve_faulty(s3.endpoint, plan) as proxy:
        spec = squall.JobSpec(
            model=str(linear_model), input=[f"s3://{bucket}/in/"], output=f"s3://{bucket}/out", output_format=fmt,
            key=["id"], method="predict_proba", workers=2, chunk_rows=700, backoff_base=0.05, endpoint_url=proxy.endpoint,
        )
        run_to_the_end(spec, f"faults-{fmt}")
    # Seed 16 fails 4 of a job's first 6 writes and 11 of its first 60 reads, with every kind of fault.
    assert plan.seen["read"] >= 60 and plan.seen["write"] >= 6
    assert plan.count("read") >= 11 and plan.count("write") >= 4, f"too few faults landed: {dict(plan.injected)}"
    assert {fault for fault, _ in plan.injected} == {"slowdown", "internal", "reset"}
    assert_every_row_once_as_the_model_predicts(s3, f"{bucket}/out", fmt, frame, linear_model)


def test_a_store_down_for_the_manifest_fails_the_job_with_the_reason_and_resume_finishes_it(s3, bucket, linear_model):
    frame = upload_inputs(s3, bucket, "parquet")
    plan = FaultPlan(rate=0.0, outage=lambda method, path: method == "PUT" and path.endswith("/out/_manifest.json"))
    with serve_faulty(s3.endpoint, plan) as proxy:
        args = ["--model", str(linear_model), "--input", f"s3://{bucket}/in/", "--output", f"s3://{bucket}/out",
                "--key", "id", "--method", "predict_proba", "--workers", "2", "--chunk-rows", "1000",
                "--endpoint-url", proxy.endpoint, "--job-id", "manifest-down", "-q",
                "--storage-options", json.dumps({"config_kwargs": {"retries": {"max_attempts": 2}}})]
        failed = run_cli("run", *args)
        assert failed.returncode == 1 and "Traceback" not in failed.stderr, failed.stderr
        assert "We encountered an internal error" in failed.stderr and "squall resume manifest-down" in failed.stderr
        job = squall.status("manifest-down")
        assert job.job.state == "FAILED" and "We encountered an internal error" in (job.job.message or "")
        assert job.counts.count("done") == FILES * ROWS_PER_FILE // 1_000, "every chunk was committed before finalize"
        assert plan.injected[("outage", "write")] >= 1 and not direct(s3).exists(f"{bucket}/out/_SUCCESS")

        plan.outage = None  # the store is back
        resumed = run_cli("resume", "manifest-down", "-q")
        assert resumed.returncode == 0, resumed.stderr
        assert resumed.stdout.strip().splitlines()[-1].startswith(f"SUCCEEDED {FILES * ROWS_PER_FILE} rows")
    assert_every_row_once_as_the_model_predicts(s3, f"{bucket}/out", "parquet", frame, linear_model)


def test_a_footer_read_the_store_fails_is_tried_again_not_called_an_unreadable_file(s3, bucket, linear_model):
    upload_inputs(s3, bucket, "parquet")
    failures = iter(range(3))  # the first three reads of one file's footer fail, then the store answers again
    plan = FaultPlan(rate=0.0, outage=lambda method, path: method == "GET" and "/in/data-1.parquet" in path
                     and next(failures, None) is not None)
    with serve_faulty(s3.endpoint, plan) as proxy:
        spec = squall.JobSpec(model=str(linear_model), input=[f"s3://{bucket}/in/"], output=f"s3://{bucket}/out",
                              key=["id"], endpoint_url=proxy.endpoint,
                              storage_options={"config_kwargs": {"retries": {"max_attempts": 1}}})  # no retry below squall's
        job_plan = api.plan(spec)
    assert plan.injected[("outage", "read")] == 3
    assert job_plan.est_rows == FILES * ROWS_PER_FILE and len(job_plan.files) == FILES
