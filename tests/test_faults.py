"""Fault injection with real processes: kills, hangs, leaks, aborts and bad rows end in documented states, nothing lost."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np
import psutil
import pyarrow.parquet as pq
import pytest
from support.cli import SQUALL, run_cli
from support.data import ids_dataset, read_output
from support.faults import (
    assert_exact_output,
    ids_spec,
    run_killing_workers,
    worker_pids,
)

import squall
import squall.api
from squall.errors import SpecError
from squall.resolve import backend_for, model_ref


def test_killing_a_random_worker_every_half_second_loses_and_duplicates_nothing(tmp_path, monkeypatch):
    ids_dataset(tmp_path / "in", 60_000, files=3, row_group_size=500)
    monkeypatch.setenv("FAULT_SLEEP", "0.05")
    spec = ids_spec(tmp_path, "steady", workers=2, chunk_rows=1_000, batch_size=250, max_attempts=50, split_after=50, backoff_base=0.05)
    result, kills = run_killing_workers(spec, seed=7, max_kills=16)
    assert len(kills) >= 8
    assert result.state == "SUCCEEDED" and result.rows_out == 60_000
    assert result.worker_starts >= 2 + len(kills) - 1 and result.cold_starts == 1
    assert_exact_output(tmp_path / "out", set(range(60_000)))


def test_a_killed_coordinator_resumes_redoing_only_leased_chunks(tmp_path):
    ids_dataset(tmp_path / "in", 40_000, files=2, row_group_size=500)
    env = {"FAULT_SLEEP": "0.05"}
    args = ["run", "--model", "faultmodels:steady", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
            "--key", "id", "--features", "id_copy", "--workers", "2", "--chunk-rows", "1000", "--batch-size", "250",
            "--job-id", "crash-me", "-q"]
    process = subprocess.Popen([*SQUALL, *args], env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    database = Path(os.environ["SQUALL_HOME"]) / "squall.db"

    def done() -> int:
        if not database.exists():
            return 0
        try:
            with sqlite3.connect(database) as db:
                return int(db.execute("SELECT COUNT(*) FROM chunks WHERE state='done'").fetchone()[0])
        except sqlite3.OperationalError:  # the coordinator has made the file but not its tables yet
            return 0

    poll(lambda: done() >= 6 or process.poll() is not None, "six committed chunks", 120)
    assert process.poll() is None
    workers = worker_pids(process.pid)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert workers
    poll(lambda: not any(alive(pid) for pid in workers), "the workers to die with their coordinator", 30)
    resumed = run_cli("resume", "crash-me", "-q", env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert_exact_output(tmp_path / "out", set(range(40_000)))
    with sqlite3.connect(database) as db:
        redone = db.execute("SELECT COUNT(*) FROM attempts WHERE outcome='lost' AND error='the coordinator stopped'").fetchone()[0]
        state = db.execute("SELECT state FROM jobs WHERE job_id='crash-me'").fetchone()[0]
    assert state == "SUCCEEDED"
    assert 1 <= redone <= 2


def test_a_model_that_hangs_on_one_row_is_isolated_by_timeouts_and_splits(tmp_path, monkeypatch):
    ids_dataset(tmp_path / "in", 2_000, row_group_size=2_000)
    monkeypatch.setenv("FAULT_ID", "1234")
    spec = ids_spec(tmp_path, "hang_on_row", chunk_rows=64, batch_size=64, timeout=1.0, split_after=1, max_dead_chunks=1, backoff_base=0.0)
    result = squall.run(spec)
    assert (result.state, result.rows_out, result.dead_chunks) == ("PARTIAL", 1_999, 1)
    assert_exact_output(tmp_path / "out", set(range(2_000)) - {1234})
    (dead,) = squall.api.dead_letters(result.job_id)
    assert dead.est_rows == 1 and dead.attempts[-1]["outcome"] == "timeout"
    assert "cannot be split below min_chunk_rows" in str(dead.attempts[-1]["error"])


def test_the_batch_lane_finishes_a_chunk_that_needs_more_than_the_timeout(tmp_path, monkeypatch):
    ids_dataset(tmp_path / "in", 400, row_group_size=400)
    monkeypatch.setenv("FAULT_SLEEP", "1.5")
    spec = ids_spec(tmp_path, "steady", chunk_rows=400, batch_size=400, timeout=1.0, split_after=1, min_chunk_rows=400, batch_lane=True)
    result = squall.run(spec)
    assert (result.state, result.rows_out) == ("SUCCEEDED", 400)
    with sqlite3.connect(Path(os.environ["SQUALL_HOME"]) / "squall.db") as db:
        outcomes = [row[0] for row in db.execute("SELECT outcome FROM attempts ORDER BY attempt")]
    assert outcomes == ["to-batch-lane", "ok"]


@pytest.mark.parametrize("fork", [True, False], ids=["fork-server", "spawned"])
def test_a_row_that_aborts_the_process_is_isolated_by_splitting_on_crashes(tmp_path, monkeypatch, fork):
    ids_dataset(tmp_path / "in", 1_000, row_group_size=1_000)
    monkeypatch.setenv("FAULT_ID", "321")
    spec = ids_spec(tmp_path, "abort_on_row", chunk_rows=128, batch_size=32, split_after=1, max_dead_chunks=1,
                    backoff_base=0.0, fork=fork)
    result = squall.run(spec)
    assert (result.state, result.rows_out, result.dead_chunks) == ("PARTIAL", 999, 1)
    assert_exact_output(tmp_path / "out", set(range(1_000)) - {321})
    (dead,) = squall.api.dead_letters(result.job_id)
    assert dead.est_rows == 1 and "SIGABRT" in str(dead.attempts[-1]["error"])
    with sqlite3.connect(Path(os.environ["SQUALL_HOME"]) / "squall.db") as db:
        failures = db.execute("SELECT chunk_id, outcome, error FROM attempts WHERE outcome != 'ok'").fetchall()
    # Only the chunks holding row 321 crashed (128 → 64 → … → 1 rows), each by SIGABRT: no other worker was touched.
    assert len(failures) == 8 and all("SIGABRT" in error for _, _, error in failures), failures


def test_a_crash_whose_exit_status_comes_late_is_still_that_chunks_crash(tmp_path, monkeypatch):
    """Regression (issue 16, defect 9): the pipe of a crashed worker closes before its exit status is known. The
    coordinator waited a second for it, stalled, then called the death "closed its pipe but did not exit". Now the
    worker is ending until its status comes (here: until the fork server, stopped by the worker, is resumed),
    the other worker's chunks commit meanwhile, and the crash is recorded with its signal."""
    ids_dataset(tmp_path / "in", 3_000, row_group_size=3_000)
    flag = tmp_path / "zygote-stopped"
    monkeypatch.setenv("FAULT_ID", "1234")
    monkeypatch.setenv("FAULT_FLAG", str(flag))
    monkeypatch.setenv("FAULT_SLEEP", "0.05")
    spec = ids_spec(tmp_path, "abort_on_row_stopping_fork_server", workers=2, chunk_rows=100, batch_size=50,
                    split_after=1, max_dead_chunks=1, backoff_base=0.0)
    committed_while_stopped: list[int] = []

    def resume_fork_server_after_two_commits() -> None:
        poll(flag.exists, "a worker to stop its fork server", timeout=120)
        zygote = psutil.Process(int(flag.read_text()))
        poll(lambda: zygote.status() == psutil.STATUS_STOPPED, "the fork server to stop")
        before = len(list((tmp_path / "out").glob("part-*")))
        try:
            poll(lambda: len(list((tmp_path / "out").glob("part-*"))) >= before + 2, "two commits meanwhile")
            committed_while_stopped.append(len(list((tmp_path / "out").glob("part-*"))) - before)
        finally:
            zygote.send_signal(signal.SIGCONT)

    thread = threading.Thread(target=resume_fork_server_after_two_commits)
    thread.start()
    try:
        result = squall.run(spec)
    finally:
        thread.join()
    assert committed_while_stopped and committed_while_stopped[0] >= 2
    assert (result.state, result.rows_out, result.dead_chunks) == ("PARTIAL", 2_999, 1)
    assert_exact_output(tmp_path / "out", set(range(3_000)) - {1234})
    with sqlite3.connect(Path(os.environ["SQUALL_HOME"]) / "squall.db") as db:
        failures = db.execute("SELECT outcome, error FROM attempts WHERE outcome != 'ok' ORDER BY finished_at").fetchall()
    assert failures and all("SIGABRT" in error for _, error in failures), failures


def test_a_worker_over_its_memory_limit_is_killed_and_its_chunk_split(tmp_path, monkeypatch):
    ids_dataset(tmp_path / "in", 1_000, row_group_size=1_000)
    monkeypatch.setenv("FAULT_ID", "500")
    spec = ids_spec(tmp_path, "hog_on_row", chunk_rows=250, batch_size=50, memory=600, split_after=1, max_dead_chunks=1, backoff_base=0.0)
    result = squall.run(spec)
    assert (result.state, result.rows_out, result.dead_chunks) == ("PARTIAL", 999, 1)
    assert_exact_output(tmp_path / "out", set(range(1_000)) - {500})
    (dead,) = squall.api.dead_letters(result.job_id)
    assert dead.attempts[-1]["outcome"] == "memory" and "600 MB memory limit" in str(dead.attempts[-1]["error"])


def test_a_leaking_model_is_recycled_between_invocations_before_it_is_killed(tmp_path, monkeypatch):
    ids_dataset(tmp_path / "in", 4_000, row_group_size=200)
    monkeypatch.setenv("FAULT_LEAK_MB", "40")
    spec = ids_spec(tmp_path, "leak", workers=1, chunk_rows=200, batch_size=200, memory=1_500, recycle_rss_mb=450)
    result = squall.run(spec)
    assert (result.state, result.rows_out) == ("SUCCEEDED", 4_000)
    assert result.worker_starts >= 2
    with sqlite3.connect(Path(os.environ["SQUALL_HOME"]) / "squall.db") as db:
        assert db.execute("SELECT COUNT(*) FROM attempts WHERE outcome != 'ok'").fetchone()[0] == 0
    assert_exact_output(tmp_path / "out", set(range(4_000)))


def test_max_invocations_per_worker_recycles_workers(tmp_path):
    ids_dataset(tmp_path / "in", 2_000, row_group_size=100)
    spec = ids_spec(tmp_path, "steady", workers=1, chunk_rows=100, max_invocations_per_worker=5)
    result = squall.run(spec)
    assert result.state == "SUCCEEDED" and result.invocations == 20
    assert result.worker_starts == 5


def test_raising_on_a_tenth_of_a_percent_of_rows_isolates_exactly_those(tmp_path):
    ids_dataset(tmp_path / "in", 20_000, row_group_size=2_000)
    spec = ids_spec(tmp_path, "raise_on_some", batch_size=4_096, max_error_rate=0.002)
    result = squall.run(spec)
    bad = {i for i in range(20_000) if i % 1000 == 7}
    assert (result.state, result.error_rows, result.rows_out) == ("PARTIAL", 20, 19_980)
    assert_exact_output(tmp_path / "out", set(range(20_000)) - bad)
    errors = pq.read_table(tmp_path / "out" / "_errors").to_pandas()
    assert sorted(json.loads(k)["id"] for k in errors["key"]) == sorted(bad)


def test_redrive_after_fixing_the_model_turns_partial_into_succeeded(tmp_path, monkeypatch):
    ids_dataset(tmp_path / "in", 3_000, row_group_size=500)
    flag = tmp_path / "bug"
    flag.write_text("on")
    monkeypatch.setenv("FAULT_FLAG", str(flag))
    spec = ids_spec(tmp_path, "broken_until_fixed", chunk_rows=500, max_attempts=2, max_dead_chunks=2, backoff_base=0.0)
    first = squall.run(spec)
    assert (first.state, first.rows_out, first.dead_chunks) == ("PARTIAL", 2_500, 1)
    listing = run_cli("dlq", first.job_id)
    assert listing.returncode == 0 and "model bug on this segment" in listing.stdout and "attempt" in listing.stdout
    flag.unlink()
    redriven = run_cli("redrive", first.job_id, "--max-attempts", "3", "-q")
    assert redriven.returncode == 0, redriven.stderr
    assert "SUCCEEDED 3000 rows" in redriven.stdout
    assert_exact_output(tmp_path / "out", set(range(3_000)))
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert manifest["state"] == "SUCCEEDED" and manifest["rows"]["written"] == 3_000 and manifest["dead_chunks"] == []
    assert (tmp_path / "out" / "_SUCCESS").exists()


def test_cancel_stops_a_running_job_keeping_committed_parts_and_resume_finishes_it(tmp_path):
    ids_dataset(tmp_path / "in", 20_000, row_group_size=500)
    env = {"FAULT_SLEEP": "0.2"}
    args = ["run", "--model", "faultmodels:steady", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
            "--key", "id", "--features", "id_copy", "--workers", "1", "--chunk-rows", "500", "--batch-size", "100",
            "--job-id", "stop-me", "-q"]
    process = subprocess.Popen([*SQUALL, *args], env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    poll(lambda: len(list((tmp_path / "out").glob("part-*.parquet"))) >= 2 or process.poll() is not None, "two parts", 120)
    assert process.poll() is None
    assert run_cli("cancel", "stop-me").returncode == 0
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    status = json.loads(run_cli("status", "stop-me", "--json").stdout)
    assert status["state"] == "CANCELLED" and 0 < status["rows_out"] < 20_000
    assert not (tmp_path / "out" / "_SUCCESS").exists()
    resumed = run_cli("resume", "stop-me", "-q", env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert_exact_output(tmp_path / "out", set(range(20_000)))


def test_sigstopped_worker_past_its_deadline_is_killed_and_its_late_attempt_never_lands(tmp_path, monkeypatch):
    ids_dataset(tmp_path / "in", 3_000, row_group_size=500)
    pids_file = tmp_path / "busy-pids"
    monkeypatch.setenv("FAULT_SLEEP", "0.3")
    monkeypatch.setenv("FAULT_PIDS", str(pids_file))
    spec = ids_spec(tmp_path, "steady", workers=2, chunk_rows=500, batch_size=100, timeout=2.0, backoff_base=0.0)
    stopped: list[int] = []

    def stopper() -> None:
        poll(pids_file.exists, "a busy worker", 120)
        victim = int(pids_file.read_text().split()[0])
        os.kill(victim, signal.SIGSTOP)
        stopped.append(victim)

    thread = threading.Thread(target=stopper, daemon=True)
    thread.start()
    result = squall.run(spec)
    thread.join(timeout=1)
    assert stopped
    try:
        os.kill(stopped[0], signal.SIGCONT)  # were it alive, it would now finish its attempt and write it
    except ProcessLookupError:
        pass
    poll(lambda: not alive(stopped[0]), "the stopped worker to be gone", 30)
    assert result.state == "SUCCEEDED" and result.rows_out == 3_000
    assert_exact_output(tmp_path / "out", set(range(3_000)))  # no late attempt landed
    with sqlite3.connect(Path(os.environ["SQUALL_HOME"]) / "squall.db") as db:
        outcomes = db.execute("SELECT outcome, COUNT(*) FROM attempts GROUP BY outcome").fetchall()
    assert dict(outcomes) == {"ok": 6, "timeout": 1}


# --- the local backend, driven directly: which worker a death, a pid or a kill belongs to ----------------------


def fork_server_of(coordinator_pid: int) -> psutil.Process:
    """The fork server (zygote) process of a coordinator."""
    for process in psutil.Process(coordinator_pid).children():
        if "squall.backends.local.zygote" in " ".join(process.cmdline()):
            return process
    raise AssertionError("no fork server is running")


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie has ended: it only waits to be reaped)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def live_children(process: psutil.Process) -> set[int]:
    return {child.pid for child in process.children() if child.status() != psutil.STATUS_ZOMBIE}


def poll(condition: Callable[[], object], what: str, timeout: float = 60.0) -> None:
    """Wait until ``condition()`` is true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def settled(zygote: psutil.Process, children: set[int]) -> bool:
    """The fork server has exactly ``children`` alive, none left to reap, and is back waiting for requests:
    every answer about them (forked, exited) has been sent."""
    every = {child.pid for child in zygote.children()}
    return every == children and zygote.status() == psutil.STATUS_SLEEPING


def drive(backend, until: Callable[[list], bool], what: str, timeout: float = 60.0) -> list:
    """Call ``backend.wait`` until the events seen so far satisfy ``until``; returns them."""
    seen: list = []
    deadline = time.monotonic() + timeout
    while not until(seen):
        assert time.monotonic() < deadline, f"timed out waiting for {what}; events: {seen}"
        seen.extend(backend.wait(0.05))
    return seen


def ready_of(events: list, worker: int) -> bool:
    return any(type(event).__name__ == "WorkerReady" and event.worker == worker for event in events)


def test_a_fork_answered_while_another_workers_exit_is_pending_goes_to_its_own_worker(tmp_path):
    """Regression (issue 16, defect 9): answers of the fork server read while the backend looked up a dead worker's
    exit status were dropped, so the next answer went to the wrong worker, and killing that worker killed another
    one (a healthy worker's chunk then counted as a crash, or a fresh worker as a failed start)."""
    spec = ids_spec(tmp_path, "steady", workers=2)
    backend = backend_for(spec, tmp_path / "logs")
    backend.start(model_ref(spec), 2)
    try:
        drive(backend, lambda seen: ready_of(seen, 0) and ready_of(seen, 1), "both workers to be ready")
        zygote = fork_server_of(os.getpid())
        first = live_children(zygote)
        backend.kill(1)  # to learn which process is worker 0: the one that survives
        poll(lambda: len(live_children(zygote) - first) == 1 and len(live_children(zygote) & first) == 1, "worker 1 replaced")
        (worker0,) = live_children(zygote) & first
        drive(backend, lambda seen: ready_of(seen, 1), "the new worker 1 to be ready")
        poll(lambda: settled(zygote, live_children(zygote)), "the fork server to answer")
        assert not backend.wait(0) + backend.wait(0)  # every answer read: the next death is the first news

        os.kill(worker0, signal.SIGKILL)  # its pipe closes before the fork server reaps it and says so
        poll(lambda: settled(zygote, live_children(zygote)) and worker0 not in live_children(zygote), "worker 0 reaped")
        before = live_children(zygote)
        backend.kill(1)  # a fork request, answered while worker 0's exit has not been read yet
        poll(lambda: len(live_children(zygote) - before) == 1 and settled(zygote, live_children(zygote)), "the fork")
        (worker1,) = live_children(zygote) - before

        events = drive(backend, lambda seen: ready_of(seen, 0) and ready_of(seen, 1), "both workers back")
        (died,) = [event for event in events if type(event).__name__ == "WorkerDied"]
        assert died.worker == 0 and "SIGKILL" in died.reason
        (worker0,) = live_children(zygote) - before - {worker1}
        backend.kill(1)  # must end worker 1's process, and only it
        events = drive(backend, lambda seen: ready_of(seen, 1), "the next worker 1")
        assert not [event for event in events if type(event).__name__ == "WorkerDied"]
        poll(lambda: worker1 not in live_children(zygote), "worker 1 to end")
        assert worker0 in live_children(zygote)
    finally:
        backend.shutdown()


# --- promises of the README, each with a real process -----------------------------------------------------------


def attempts_of(job_id: str) -> list[sqlite3.Row]:
    with sqlite3.connect(Path(os.environ["SQUALL_HOME"]) / "squall.db") as db:
        db.row_factory = sqlite3.Row
        return db.execute("SELECT * FROM attempts WHERE job_id=? ORDER BY chunk_id, attempt", (job_id,)).fetchall()


def test_a_worker_that_miscounts_the_rows_it_read_makes_the_job_failed_by_reconciliation(tmp_path):
    ids_dataset(tmp_path / "in", 2_000, row_group_size=500)
    done = run_cli(
        "run", "--model", "miscounting:predict", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
        "--key", "id", "--features", "id_copy", "--chunk-rows", "500", "--workers", "2", "--job-id", "miscount", "-q",
    )
    assert done.returncode == 1, done.stderr
    assert "FAILED 2004 rows" in done.stdout  # each of the 4 chunks reported one row more than it read
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert manifest["state"] == "FAILED" and not (tmp_path / "out" / "_SUCCESS").exists()
    assert {k: manifest["rows"][k] for k in ("read", "written", "errors", "reconciled")} == {
        "read": 2_004, "written": 2_000, "errors": 0, "reconciled": False}
    assert "row counts do not reconcile: read 2004, written 2000, errors 0" in manifest["message"]
    assert json.loads(run_cli("status", "miscount", "--json").stdout)["state"] == "FAILED"
    got = read_output(tmp_path / "out")  # the rows themselves are the model's, each once
    assert sorted(got["id"]) == list(range(2_000))
    np.testing.assert_array_equal(got["prediction"].to_numpy(), got["id"].to_numpy() * 2.0)


def test_a_timeout_kills_the_workers_whole_process_group(tmp_path, monkeypatch):
    ids_dataset(tmp_path / "in", 1_000, row_group_size=500)
    monkeypatch.setenv("FAULT_DIR", str(tmp_path))
    spec = ids_spec(tmp_path, "hang_with_a_child", workers=1, chunk_rows=500, timeout=2.0, split_after=5, backoff_base=0.0)
    seen_alive: list[psutil.Process] = []

    def watch_the_first_child() -> None:
        poll(lambda: list(tmp_path.glob("child-*")) and list(tmp_path.glob("child-*"))[0].read_text(), "a child", 120)
        pid = int(list(tmp_path.glob("child-*"))[0].read_text())
        if alive(pid):
            seen_alive.append(psutil.Process(pid))

    thread = threading.Thread(target=watch_the_first_child)
    thread.start()
    try:
        result = squall.run(spec)
    finally:
        thread.join()
    assert (result.state, result.rows_out) == ("SUCCEEDED", 1_000)
    assert_exact_output(tmp_path / "out", set(range(1_000)))
    assert [row["outcome"] for row in attempts_of(result.job_id)] == ["timeout", "ok", "timeout", "ok"]
    assert seen_alive, "the child was running while its worker hung"
    children = [int(path.read_text()) for path in tmp_path.glob("child-*")]
    assert len(children) == 2

    poll(lambda: not any(alive(pid) for pid in children), "the sleeping children to be killed with their workers", 10)


def test_a_chunk_in_the_batch_lane_that_runs_past_batch_lane_timeout_is_killed(tmp_path, monkeypatch):
    ids_dataset(tmp_path / "in", 400, row_group_size=400)
    monkeypatch.setenv("FAULT_ID", "7")  # hangs for an hour on the chunk's only batch
    spec = ids_spec(tmp_path, "hang_on_row", chunk_rows=400, batch_size=400, timeout=1.0, split_after=1, min_chunk_rows=400,
                    batch_lane=True, batch_lane_timeout=2.0, max_attempts=2, backoff_base=0.0)
    result = squall.run(spec)
    assert (result.state, result.rows_out, result.dead_chunks) == ("FAILED", 0, 1)
    first, *in_batch_lane = attempts_of(result.job_id)
    assert first["outcome"] == "to-batch-lane" and "1 s time limit" in first["error"]
    assert len(in_batch_lane) == 2  # max_attempts in the batch lane
    for attempt in in_batch_lane:
        assert attempt["outcome"] == "timeout" and "ran past the 2 s time limit" in attempt["error"]
        assert attempt["finished_at"] - attempt["started_at"] >= 2.0  # killed at the batch lane's limit, not the function's


def test_a_second_coordinator_of_a_running_job_is_refused(tmp_path):
    ids_dataset(tmp_path / "in", 10_000, row_group_size=500)
    first = subprocess.Popen(
        [*SQUALL, "run", "--model", "faultmodels:steady", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
         "--key", "id", "--features", "id_copy", "--workers", "1", "--chunk-rows", "500", "--job-id", "twice", "-q"],
        env={**os.environ, "FAULT_SLEEP": "0.25"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    poll(lambda: list((tmp_path / "out").glob("part-*")) or first.poll() is not None, "the first coordinator's first part")
    second = run_cli("resume", "twice", "-q")
    assert first.poll() is None, "the first coordinator was still running when the second was refused"
    assert second.returncode == 1 and "job twice is being run by another squall process" in second.stderr
    _, stderr = first.communicate(timeout=240)
    assert first.returncode == 0, stderr
    assert_exact_output(tmp_path / "out", set(range(10_000)))
    assert {row["outcome"] for row in attempts_of("twice")} == {"ok"}  # the refused one released no lease


def test_redrive_refuses_result_changing_fields_and_says_when_there_is_nothing_to_redrive(tmp_path, monkeypatch):
    ids_dataset(tmp_path / "in", 3_000, row_group_size=500)
    flag = tmp_path / "bug"
    flag.write_text("on")
    monkeypatch.setenv("FAULT_FLAG", str(flag))
    spec = ids_spec(tmp_path, "broken_until_fixed", chunk_rows=500, max_attempts=1, max_dead_chunks=1, job_id="redo")
    assert squall.run(spec).state == "PARTIAL"
    stored = squall.status("redo").job.spec
    changes = {"model_output": "label", "batch_format": "numpy", "output_layout": "vector", "method": "predict_proba",
               "input": [str(tmp_path / "elsewhere")], "features": ["id"], "max_line_bytes": 1_000}
    for field, value in changes.items():
        with pytest.raises(SpecError, match=f"a redrive cannot change `{field}`"):
            squall.api.redrive("redo", overrides={field: value, "timeout": 5.0})
    assert squall.status("redo").job.spec == stored and len(squall.api.dead_letters("redo")) == 1

    same = squall.api.redrive("redo", overrides={"batch_format": stored["batch_format"], "max_attempts": 2})
    assert same.state == "PARTIAL"  # an unchanged value is no change; the model is still broken
    flag.unlink()
    fixed = run_cli("redrive", "redo", "--max-attempts", "3", "-q")
    assert fixed.returncode == 0 and "SUCCEEDED 3000 rows" in fixed.stdout, fixed.stderr
    assert_exact_output(tmp_path / "out", set(range(3_000)))
    before = squall.status("redo").job.spec
    nothing = run_cli("redrive", "redo", "--timeout", "5")
    assert nothing.returncode == 2 and "job redo has no dead chunks to redrive" in nothing.stderr
    assert squall.status("redo").job.spec == before  # refused before anything changed


def test_sigterm_while_the_job_is_finalized_ends_with_every_row_exactly_once(tmp_path):
    """SIGTERM to a real `squall run` once its log says FINALIZE: finalize either completes (exit 0, SUCCEEDED) or
    is interrupted (exit 130, CANCELLED, no _SUCCESS) and `squall resume` writes the manifest and _SUCCESS."""
    ids_dataset(tmp_path / "in", 30_000, files=3, row_group_size=10)  # 3,000 parts: finalize takes a moment
    log = tmp_path / "job.log"
    process = subprocess.Popen(
        [*SQUALL, "run", "--model", "faultmodels:steady", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
         "--key", "id", "--features", "id_copy", "--workers", "2", "--chunk-rows", "10", "--job-id", "fin",
         "--log-file", str(log), "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    seen, deadline = "", time.monotonic() + 600
    while "FINALIZE" not in seen:
        assert time.monotonic() < deadline and process.poll() is None, "the job ended before it was seen finalizing"
        if log.exists():
            with open(log) as handle:
                handle.seek(max(0, log.stat().st_size - 4096))
                seen = handle.read()
        time.sleep(0.002)
    assert process.poll() is None
    process.send_signal(signal.SIGTERM)  # the job is being finalized (or just was): the fault lands in that window
    stdout, stderr = process.communicate(timeout=120)
    state = json.loads(run_cli("status", "fin", "--json").stdout)["state"]
    if state == "CANCELLED":  # finalize was interrupted
        assert process.returncode == 130, stderr
        assert not (tmp_path / "out" / "_SUCCESS").exists()
        resumed = run_cli("resume", "fin", "-q")
        assert resumed.returncode == 0 and "SUCCEEDED 30000 rows" in resumed.stdout, resumed.stderr
    else:  # finalize had written the final state when the signal was handled: the job's exit code stands
        assert (state, process.returncode) == ("SUCCEEDED", 0), stderr
    assert "Traceback" not in stderr
    assert_exact_output(tmp_path / "out", set(range(30_000)))
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert manifest["state"] == "SUCCEEDED" and manifest["rows"]["written"] == 30_000 and manifest["rows"]["reconciled"]
    assert len(manifest["parts"]) == 3_000 and (tmp_path / "out" / "_SUCCESS").exists()
