"""The ``Backend`` contract (:mod:`squall.backends.base`), run against every implementation, as fsspec and huey
run one suite against each of their storages.

Each test drives a backend as the coordinator does, through the protocol only,
on real workers (processes, Ray actors, or the in-process stub) that load a
real model: ``faultmodels:LoadsOnFlag``, whose load waits for a flag file (so
a test can tell that ``start`` returned before any worker could be ready) and
whose batch holding ``SLOW_ID`` takes a few seconds after saying which process
runs it (so a kill lands while work is in flight, and a report that a kill
failed to stop would arrive while the test still listens). On the stub, which
runs no process, that slow attempt is scripted to hang instead.

A new backend is one entry in :data:`KINDS`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from faultmodels import LoadsOnFlag
from support import TESTS_DIR
from support.data import ids_dataset
from support.processes import alive, local_backend_processes, ray_actor_processes
from support.stub_backend import StubBackend

import squall
from squall.backends.base import Backend, InvocationDone, WorkerDied, WorkerEvent, WorkerReady
from squall.plan.chunk import Chunk
from squall.plan.planner import make_plan
from squall.resolve import ResolvedJob, backend_for
from squall.runtime.task import JobTask
from squall.states import Outcome

ROWS, CHUNK, WORKERS = 1_000, 250, 2
SLOW_ID, SLOW_S = 600, 4.0  # in chunk 2
SLOW_CHUNK = SLOW_ID // CHUNK


@dataclass(frozen=True)
class Kind:
    """One implementation under the contract: the spec fields that choose it, how it is made from a spec, the
    processes it runs, how many model loads ``workers`` worker starts cost, and whether faults are scripted."""

    name: str
    fields: dict[str, object] = field(default_factory=dict)
    make: Callable[[squall.JobSpec, Path], Backend] = backend_for
    processes: Callable[[], set[int]] = set
    loads: Callable[[int], int] = lambda starts: starts
    scripted: bool = False
    fixtures: tuple[str, ...] = ()


KINDS = [
    Kind("local-fork", {"fork": True}, processes=local_backend_processes, loads=lambda starts: 1),  # the fork server loads once
    Kind("local-spawn", {"fork": False}, processes=local_backend_processes),
    Kind("ray", {"backend": "ray"}, processes=ray_actor_processes, fixtures=("ray_cluster",)),
    Kind("stub", make=lambda spec, logs: StubBackend(), scripted=True),
    # Not the sqs backend: its workers are slots (messages in flight), not processes it starts, so it announces no
    # WorkerReady, and its kill abandons an attempt that a remote function may still report (late, then discarded).
    # tests/test_sqs_backend.py holds it to the same outcomes through the coordinator, on real `squall worker`s.
]


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    """One Ray for the module (as tests/test_ray_backend.py starts it); actors import the test models from tests/."""
    import ray

    src = str(Path(squall.__file__).resolve().parents[1])
    ray.init(
        num_cpus=WORKERS, include_dashboard=False, log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([str(TESTS_DIR), src])}},
    )
    yield
    ray.shutdown()


@dataclass
class Contract:
    """A backend made for one test, the job's task and chunks, and what the model needs to behave as described."""

    kind: Kind
    backend: Backend
    task: JobTask
    chunks: list[Chunk]
    folder: Path
    flag: Path

    def drive(self, until: Callable[[list[WorkerEvent]], bool], what: str, timeout: float = 180.0) -> list[WorkerEvent]:
        """Call ``wait`` until the events seen satisfy ``until``; returns them."""
        seen: list[WorkerEvent] = []
        deadline = time.monotonic() + timeout
        while not until(seen):
            assert time.monotonic() < deadline, f"timed out waiting for {what}; events: {seen}"
            seen.extend(self.backend.wait(0.1))
        return seen

    def ready(self) -> None:
        """Started with every worker ready and configured: every worker idle."""
        self.flag.touch()
        self.backend.start(self.task.model, WORKERS)
        self.drive(lambda seen: ready_workers(seen) == set(range(WORKERS)), "every worker to be ready")
        self.backend.configure(self.task)
        self.drive(lambda seen: set(self.backend.idle()) == set(range(WORKERS)), "every worker to be idle")

    def submit_slow(self, worker: int) -> int | None:
        """Hand ``worker`` the slow chunk and wait until it runs; returns the pid running it (``None`` on the stub)."""
        if isinstance(self.backend, StubBackend):
            self.backend.hang(SLOW_CHUNK, 1)
        self.backend.submit(worker, self.chunks[SLOW_CHUNK], 1)
        if self.kind.scripted:
            return None
        marks = self.folder.parent
        self.drive(lambda seen: any(marks.glob("started-*")), "the slow chunk to start")
        return int(next(marks.glob("started-*")).read_text())


def ready_workers(events: list[WorkerEvent]) -> set[int]:
    return {event.worker for event in events if isinstance(event, WorkerReady)}


def reports(events: list[WorkerEvent]) -> list[InvocationDone]:
    return [event for event in events if isinstance(event, InvocationDone)]


@pytest.fixture(params=KINDS, ids=lambda kind: kind.name)
def contract(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Contract]:
    kind: Kind = request.param
    for name in kind.fixtures:
        request.getfixturevalue(name)
    folder = ids_dataset(tmp_path / "in", ROWS, row_group_size=CHUNK)
    flag = tmp_path / "loadable"
    env = {"FAULT_LOAD_FLAG": str(flag), "FAULT_DIR": str(tmp_path), "FAULT_SLOW_ID": str(SLOW_ID), "FAULT_SLOW_S": str(SLOW_S)}
    for name, value in env.items():
        monkeypatch.setenv(name, value)  # local workers and the stub see this process's environment
    options = {"backend_options": {"ray": {"runtime_env": {"env_vars": env}}}} if kind.fields.get("backend") == "ray" else {}
    spec = squall.JobSpec.model_validate({
        "model": "faultmodels:LoadsOnFlag", "input": [str(folder)], "output": str(tmp_path / "out"), "key": ["id"],
        "features": ["id_copy"], "workers": WORKERS, "chunk_rows": CHUNK, **kind.fields, **options,
    })
    plan = make_plan(spec, "contract")
    backend = kind.make(spec, tmp_path / "logs")
    try:
        yield Contract(kind, backend, ResolvedJob.of(spec).task(plan), list(plan.chunks), folder, flag)
    finally:
        backend.shutdown()


def test_start_returns_before_workers_are_ready_and_each_reports_ready_but_none_is_idle_before_configure(contract):
    backend = contract.backend
    backend.start(contract.task.model, WORKERS)  # returns although no worker can load the model yet
    assert backend.idle() == []
    if not contract.kind.scripted:  # the stub loads in-process, in wait(): it would wait for the flag here
        assert not ready_workers(backend.wait(0.5)), "a worker was ready before the model could load"
    contract.flag.touch()
    events = contract.drive(lambda seen: ready_workers(seen) == set(range(WORKERS)), "every worker to be ready")
    assert sorted(event.worker for event in events if isinstance(event, WorkerReady)) == list(range(WORKERS))
    assert all(event.init_s >= 0 for event in events if isinstance(event, WorkerReady))
    assert backend.idle() == [] and not backend.wait(0.3) and backend.idle() == [], "idle before configure"
    backend.configure(contract.task)
    contract.drive(lambda seen: set(backend.idle()) == set(range(WORKERS)), "every worker to be idle once configured")
    assert (backend.cold_starts(), backend.worker_starts()) == (contract.kind.loads(WORKERS), WORKERS)


def test_a_submitted_chunk_yields_one_report_whose_rows_are_the_models_predictions(contract):
    contract.ready()
    backend = contract.backend
    for worker, chunk in enumerate(contract.chunks[:WORKERS]):
        backend.submit(worker, chunk, 1)
        assert worker not in backend.idle(), "a busy worker is idle"
    events = contract.drive(lambda seen: len(reports(seen)) == WORKERS, "a report from each worker")
    events += backend.wait(0.5)
    done = sorted(reports(events), key=lambda event: event.worker)
    assert [(d.worker, d.report.chunk_id, d.report.attempt) for d in done] == [(0, 0, 1), (1, 1, 1)], "one report each"
    rows = pd.read_parquet(contract.folder)
    for event in done:
        report = event.report
        assert (report.outcome, report.rows_in, report.rows_out, report.error_rows) == (Outcome.OK, CHUNK, CHUNK, 0)
        assert report.part is not None
        got = pq.read_table(report.part).to_pandas()
        want = rows[rows["id"] // CHUNK == report.chunk_id]
        np.testing.assert_array_equal(got["id"].to_numpy(), want["id"].to_numpy())
        np.testing.assert_array_equal(got["prediction"].to_numpy(), LoadsOnFlag().predict(want[["id_copy"]]))
    assert set(backend.idle()) == set(range(WORKERS)), "a worker that reported is idle again"


def test_kill_stops_a_busy_worker_at_once_and_a_fresh_one_takes_its_place_and_no_report_of_it_arrives(contract):
    contract.ready()
    backend = contract.backend
    pid = contract.submit_slow(0)
    killed_at = time.monotonic()
    backend.kill(0)
    assert 0 not in backend.idle()
    if pid is not None:
        deadline = time.monotonic() + 10
        while alive(pid):
            assert time.monotonic() < deadline, f"worker process {pid} still runs after kill"
            time.sleep(0.01)
    events = contract.drive(lambda seen: 0 in ready_workers(seen), "a fresh worker 0")
    # Listen until well after the killed attempt would have reported had it kept running.
    events += contract.drive(lambda seen: time.monotonic() > killed_at + SLOW_S + 2, "the killed attempt's time to pass")
    assert not reports(events), "a report of the killed attempt arrived"
    assert not [event for event in events if isinstance(event, WorkerDied)], "a kill is not a death"
    assert pid is None or pid not in contract.kind.processes()
    backend.submit(0, contract.chunks[0], 1)
    (done,) = reports(contract.drive(lambda seen: bool(reports(seen)), "the fresh worker's report"))
    assert (done.worker, done.report.chunk_id, done.report.outcome) == (0, 0, Outcome.OK)
    assert (backend.cold_starts(), backend.worker_starts()) == (contract.kind.loads(WORKERS + 1), WORKERS + 1)


def test_wait_returns_within_about_its_timeout_when_nothing_happens(contract):
    contract.ready()
    for timeout in (0.0, 1.0):
        started = time.monotonic()
        assert contract.backend.wait(timeout) == []
        elapsed = time.monotonic() - started
        assert 0.8 * timeout <= elapsed <= timeout + 2.0, f"wait({timeout}) took {elapsed:.2f} s"


def test_shutdown_is_idempotent_and_leaves_no_process_behind(contract):
    contract.ready()
    contract.submit_slow(1)  # one worker busy, one idle
    processes = contract.kind.processes()
    assert contract.kind.scripted or len(processes) >= WORKERS
    contract.backend.shutdown()
    contract.backend.shutdown()
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in processes) or contract.kind.processes():
        assert time.monotonic() < deadline, f"left behind: {contract.kind.processes() | {p for p in processes if alive(p)}}"
        time.sleep(0.05)
