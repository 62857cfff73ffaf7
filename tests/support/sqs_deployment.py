"""A deployment on the loopback moto server for the sqs tests: a bucket with the model, the three queues, a pool of
``squall worker`` processes, the spec of a job on them, and its output checked against the model's own call."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import fsspec
import numpy as np
import pandas as pd
import pytest

import squall
from support.data import make_frame
from support.expect import expected_proba
from support.s3 import (
    assert_committed_exactly,
    filesystem,
    read_s3_output,
    upload_frame,
)
from support.s3server import S3Server
from support.sqs import Queues, WorkerPool, aws_environment, make_queues


@dataclass
class Deployment:
    """Queues on the loopback server, workers on them, and the bucket the job reads and writes."""

    s3: S3Server
    fs: fsspec.AbstractFileSystem
    bucket: str
    queues: Queues
    workers: WorkerPool

    def spec(self, fmt: str, **fields: object) -> squall.JobSpec:
        """A job of the linear model (on the bucket) over ``in/*.FMT``, on the sqs backend."""
        values: dict[str, object] = {
            "model": f"s3://{self.bucket}/model/linear.joblib", "trust_model": True, "input": [f"s3://{self.bucket}/in/*.{fmt}"],
            "output": f"s3://{self.bucket}/out", "key": ["id"], "method": "predict_proba", "workers": 2, "chunk_rows": 700,
            "backend": "sqs", "backend_options": {"sqs": {"queue": self.queues.name}}, "timeout": 30,
            **fields,
        }
        return squall.JobSpec.model_validate(values)


def deploy(s3: S3Server, bucket: str, folder: Path, linear_model: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Deployment]:
    """A deployment for one test (its workers killed at the end); this process reaches moto as boto3 would reach AWS."""
    for name, value in aws_environment(s3).items():
        monkeypatch.setenv(name, value)
    fs = filesystem(s3)
    fs.pipe_file(f"{bucket}/model/linear.joblib", linear_model.read_bytes())
    queues = make_queues(s3, f"preds-{random.randrange(10**9)}")
    pool = WorkerPool(queues.name, folder, aws_environment(s3))
    try:
        yield Deployment(s3, fs, bucket, queues, pool)
    finally:
        pool.stop()


def upload_inputs(deployment: Deployment, fmt: str, rows: int = 2_500, files: int = 2) -> pd.DataFrame:
    """``files`` frames of ``rows`` rows under ``in/`` in ``fmt``; returns them as one frame."""
    frames = [make_frame(rows, seed=i, start=i * rows) for i in range(files)]
    for index, frame in enumerate(frames):
        upload_frame(deployment.fs, frame, f"{deployment.bucket}/in/data-{index}.{fmt}", fmt)
    return pd.concat(frames, ignore_index=True)


def assert_predictions_equal_the_model(deployment: Deployment, frame: pd.DataFrame, linear_model: Path) -> None:
    """The output holds each row of ``frame`` once, with the model's own probabilities."""
    assert_committed_exactly(deployment.fs, f"{deployment.bucket}/out")
    got = read_s3_output(deployment.fs, f"{deployment.bucket}/out").set_index("id").sort_index()
    assert not got.index.duplicated().any(), "a row was committed twice"
    want = expected_proba(linear_model, frame)
    assert got.index.equals(want.index), "a row is missing"
    np.testing.assert_allclose(got[want.columns].to_numpy(), want.to_numpy(), rtol=1e-9, atol=1e-12)
