"""Shared fixtures: a private state directory, real scikit-learn models, and datasets in every format."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Callable, Iterator

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from support import TESTS_DIR
from support.ci import CI_ALLOWED_SKIPS
from support.data import FEATURES, make_frame, write_frame
from support.s3 import filesystem
from support.s3server import S3Server, serve_with_credentials


# No test reaches a real AWS endpoint: a client given no endpoint gets one nobody listens on (tests on the loopback
# server name theirs), no credentials of this machine's user are read, and none are asked of instance metadata.
for _name in [name for name in os.environ if name.startswith("AWS_")]:
    del os.environ[_name]
os.environ.update(AWS_ENDPOINT_URL="http://127.0.0.1:9", AWS_EC2_METADATA_DISABLED="true",
                  AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """Under ``SQUALL_CI=1``, report a skip outside :data:`CI_ALLOWED_SKIPS` as a failure that gives its reason."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("SQUALL_CI") == "1" and report.skipped and item.nodeid not in CI_ALLOWED_SKIPS:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where every test must run: {reason}"


@pytest.fixture(autouse=True)
def squall_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own state directory, and worker processes can import the test models."""
    home = tmp_path / "state"
    monkeypatch.setenv("SQUALL_HOME", str(home))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")])))
    return home


@pytest.fixture(scope="session")
def linear_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LogisticRegression fitted on named features, dumped with joblib."""
    train = make_frame(2_000, seed=42)
    labels = (train[FEATURES].to_numpy() @ np.arange(1, len(FEATURES) + 1)) > 0
    path = tmp_path_factory.mktemp("models") / "linear.joblib"
    joblib.dump(LogisticRegression().fit(train[FEATURES], labels), path)
    return path


@pytest.fixture
def dataset(tmp_path: Path) -> Callable[..., tuple[Path, pd.DataFrame]]:
    """Factory: write ``files`` files of ``rows`` rows each in ``fmt``; returns the folder and all rows."""

    def build(fmt: str, rows: int = 3_000, files: int = 1, row_group_size: int = 500) -> tuple[Path, pd.DataFrame]:
        folder = tmp_path / f"input-{fmt}"
        frames = []
        for index in range(files):
            frame = make_frame(rows, seed=index, start=index * rows)
            write_frame(frame, folder / f"data-{index}.{fmt}", fmt, row_group_size)
            frames.append(frame)
        return folder, pd.concat(frames, ignore_index=True)

    return build


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    yield from serve_with_credentials()


@pytest.fixture
def bucket(s3: S3Server, request: pytest.FixtureRequest) -> str:
    """A fresh bucket per test."""
    name = "t-" + request.node.name.lower().replace("_", "-")[:40].strip("-[]") + f"-{random.randrange(10**6)}"
    filesystem(s3).mkdir(name)
    return name
