"""The sqs backend on real parts: SQS and S3 served by moto on loopback, real ``squall worker`` processes.

Every attempt is a message on the request queue; workers reply on the results
queue; the coordinator commits. Predictions equal the model's own call, rows
are committed exactly once whatever is killed, and what no worker can run ends
in SQS's dead-letter queue.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import fsspec
import numpy as np
import pandas as pd
import pytest
from support.data import make_frame
from support.expect import expected_proba
from support.s3 import (
    assert_committed_exactly,
    filesystem,
    read_s3_output,
    upload_frame,
    upload_ids,
)
from support.s3server import S3Server
from support.sqs import Queues, WorkerPool, aws_environment, make_queues

import squall
from squall.store import JobStore


@dataclass
class Deployment:
    """Queues on the loopback server, workers on them, and the bucket the job reads and writes."""

    s3: S3Server
    fs: fsspec.AbstractFileSystem
    bucket: str
    queues: Queues
    workers: WorkerPool

    def spec(self, fmt: str, **fields: object) -> squall.JobSpec:
        values: dict[str, object] = {
            "model": f"s3://{self.bucket}/model/linear.joblib", "trust_model": True, "input": [f"s3://{self.bucket}/in/*.{fmt}"],
            "output": f"s3://{self.bucket}/out", "key": ["id"], "method": "predict_proba", "workers": 2, "chunk_rows": 700,
            "backend": "sqs", "backend_options": {"sqs": {"queue": self.queues.name}}, "timeout": 30,
            **fields,
        }
        return squall.JobSpec.model_validate(values)


@pytest.fixture
def deployment(s3: S3Server, bucket: str, tmp_path: Path, linear_model: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Deployment]:
    for name, value in aws_environment(s3).items():
        monkeypatch.setenv(name, value)  # the coordinator here and the workers reach moto as boto3 would reach AWS
    fs = filesystem(s3)
    fs.pipe_file(f"{bucket}/model/linear.joblib", linear_model.read_bytes())
    queues = make_queues(s3, f"preds-{random.randrange(10**9)}")
    pool = WorkerPool(queues.name, tmp_path, aws_environment(s3))
    try:
        yield Deployment(s3, fs, bucket, queues, pool)
    finally:
        pool.stop()


def upload_inputs(deployment: Deployment, fmt: str, rows: int = 2_500, files: int = 2) -> pd.DataFrame:
    frames = [make_frame(rows, seed=i, start=i * rows) for i in range(files)]
    for index, frame in enumerate(frames):
        upload_frame(deployment.fs, frame, f"{deployment.bucket}/in/data-{index}.{fmt}", fmt)
    return pd.concat(frames, ignore_index=True)


def assert_predictions_equal_the_model(deployment: Deployment, frame: pd.DataFrame, linear_model: Path) -> None:
    assert_committed_exactly(deployment.fs, f"{deployment.bucket}/out")
    got = read_s3_output(deployment.fs, f"{deployment.bucket}/out").set_index("id").sort_index()
    assert not got.index.duplicated().any(), "a row was committed twice"
    want = expected_proba(linear_model, frame)
    assert got.index.equals(want.index), "a row is missing"
    np.testing.assert_allclose(got[want.columns].to_numpy(), want.to_numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_predictions_made_by_squall_workers_on_sqs_equal_the_models_own_call(fmt, deployment, linear_model):
    frame = upload_inputs(deployment, fmt)
    deployment.workers.start(2)
    result = squall.run(deployment.spec(fmt))
    assert (result.state, result.rows_in, result.rows_out, result.error_rows) == ("SUCCEEDED", 5_000, 5_000, 0)
    assert_predictions_equal_the_model(deployment, frame, linear_model)
    task = deployment.fs.cat_file(f"{deployment.bucket}/out/_squall/{result.job_id}/task.json")
    assert b"squall-test-secret" not in task, "a credential was written into the job's task"
    logs = deployment.workers.log(0) + deployment.workers.log(1)
    assert logs.count("finished message") == result.chunks, "each chunk ran once, on the workers"
    assert deployment.queues.depth(deployment.queues.url) == 0 and deployment.queues.depth(deployment.queues.results_url) == 0


def ids_spec(deployment: Deployment, model: str, **fields: object) -> squall.JobSpec:
    """A job over the ids object on the bucket, with a fault model from tests/faultmodels.py (code the workers import)."""
    return deployment.spec(
        "parquet", model=model, input=[f"s3://{deployment.bucket}/in/ids.parquet"], features=["id_copy"], method="predict",
        trust_model=False, **fields,
    )


def invocation_outcomes(job_id: str) -> list[str]:
    with JobStore.at(None) as store:
        return [record.outcome for record in store.invocations(job_id)]


def committed_ids(deployment: Deployment) -> pd.DataFrame:
    assert_committed_exactly(deployment.fs, f"{deployment.bucket}/out")
    return read_s3_output(deployment.fs, f"{deployment.bucket}/out").sort_values("id", ignore_index=True)


def test_workers_sigkilled_at_random_with_a_message_in_hand_lose_nothing_and_every_row_is_committed_once(deployment, monkeypatch):
    rows = 4_000
    upload_ids(deployment.fs, f"{deployment.bucket}/in/ids.parquet", rows)
    monkeypatch.setenv("FAULT_SLEEP", "0.05")  # each batch of 50 rows: a chunk takes about a quarter second
    deployment.workers.start(2)
    spec = ids_spec(deployment, "faultmodels:steady", chunk_rows=250, batch_size=50, timeout=4, split_after=3)
    outcome: dict[str, squall.JobResult] = {}
    coordinator = threading.Thread(target=lambda: outcome.setdefault("result", squall.run(spec)))
    coordinator.start()
    rng = random.Random(7)
    landed = 0
    for _ in range(3):
        victim = rng.randrange(len(deployment.workers.processes))
        time.sleep(rng.uniform(0.0, 0.5))
        if coordinator.is_alive():
            landed += deployment.workers.kill_when_in_flight(victim)
            deployment.workers.replace(victim)
    coordinator.join(timeout=240)
    assert landed >= 2, "the kills did not land while a worker held a message"
    result = outcome["result"]
    assert (result.state, result.rows_in, result.rows_out, result.error_rows) == ("SUCCEEDED", rows, rows, 0)
    got = committed_ids(deployment)
    assert got["id"].tolist() == list(range(rows)), "a row is missing or doubled"
    np.testing.assert_array_equal(got["prediction"].to_numpy(), got["id"].to_numpy() * 2.0)
    outcomes = invocation_outcomes(result.job_id)
    assert outcomes.count("timeout") >= landed, "a killed worker's attempt was not abandoned and retried"
