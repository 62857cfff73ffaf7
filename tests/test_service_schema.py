"""Schemathesis generates requests from the service's own /openapi.json; no route may answer with a 5xx.

The application is built at import (schemathesis reads its schema when the
tests are collected) on a state directory of its own; its scheduler runs
for the duration of the module (not per request, as the ASGI lifespan would
have it), with one finished job to find.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator, Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from support import TESTS_DIR
from support.data import ids_dataset

import squall
from squall.service.app import create_app
from squall.service.config import ServeConfig

TOKEN = "schema-token"
_ROOT = Path(tempfile.mkdtemp(prefix="squall-schema-"))
app = create_app(
    ServeConfig(state_dir=str(_ROOT / "state"), token=TOKEN, allowed_roots=[str(_ROOT / "allowed")], max_concurrency=1)
)


@asynccontextmanager
async def _no_lifespan(app: object) -> AsyncIterator[None]:
    yield  # each request over ASGI would start and stop the scheduler; the fixture below runs it once


app.router.lifespan_context = _no_lifespan
schema = schemathesis.openapi.from_asgi("/openapi.json", app, headers={"Authorization": f"Bearer {TOKEN}"})


@pytest.fixture(scope="module", autouse=True)
def running_service() -> Iterator[None]:
    """The scheduler runs while the module's tests do; one finished job is in the store."""
    with pytest.MonkeyPatch.context() as patch:  # workers import the test models (conftest does this per test)
        patch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")])))
        yield from _serving()


def _serving() -> Iterator[None]:
    ids_dataset(_ROOT / "allowed" / "in", 200, row_group_size=100)
    spec = squall.JobSpec(model="faultmodels:steady", input=[str(_ROOT / "allowed" / "in")], output=str(_ROOT / "allowed" / "out"),
                          key=["id"], features=["id_copy"], workers=1, job_id="finished", state_dir=str(_ROOT / "state"))
    squall.run(spec)
    app.state.scheduler.start()
    try:
        yield
    finally:
        app.state.scheduler.stop()
        shutil.rmtree(_ROOT, ignore_errors=True)


@schema.parametrize()
@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_route_answers_with_a_server_error(case: schemathesis.Case) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"}, checks=[not_a_server_error])
