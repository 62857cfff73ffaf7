"""`squall serve` with a watched folder in its config: every file dropped in is one job of the service's queue,
exactly once, also when the server is SIGKILLed in the middle and started again."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import threading
import time
from contextlib import closing
from pathlib import Path

import httpx
from support.data import read_output
from support.service import free_port, serve_process
from support.triggers import (
    ROWS,
    assert_no_second_job,
    complete_outputs,
    drop_quick,
    drop_renamed,
    drop_slowly,
    template,
)

TOKEN = "triggers-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def start_server(config: Path, port: int) -> subprocess.Popen[str]:
    # Each chunk takes half a second more: long enough in flight for the kill below to land on one.
    return serve_process(port, "--config", str(config), env={"SQUALL_TOKEN": TOKEN, "FAULT_SLEEP": "0.5"})


def chunks_in_flight(home: Path) -> int:
    """Chunks leased to a worker right now, as the coordinators recorded them."""
    try:
        with closing(sqlite3.connect(f"file:{home / 'squall.db'}?mode=ro", uri=True)) as store:
            return int(store.execute("SELECT COUNT(*) FROM chunks WHERE state='leased'").fetchone()[0])
    except sqlite3.OperationalError:  # the store is not made yet
        return 0


def drop(inbox: Path, indexes: range) -> None:
    """Files arrive at once, some written slowly over seconds, one renamed into place."""
    writers = []
    for index in indexes:
        how = drop_slowly if index % 4 == 1 else drop_renamed if index % 10 == 5 else drop_quick
        writers.append(threading.Thread(target=how, args=(inbox, index)))
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()


def wait_for_outputs(out: Path, count: int, server: subprocess.Popen[str], timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while len(complete_outputs(out)) < count:
        assert server.poll() is None, server.stdout.read() if server.stdout else ""
        assert time.monotonic() < deadline, f"only {len(complete_outputs(out))} of {count} outputs after {timeout_s} s"
        time.sleep(0.3)


def test_twenty_files_dropped_into_a_watched_folder_are_twenty_jobs_across_a_server_sigkill(squall_home, tmp_path, linear_model):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    template(tmp_path, linear_model, preprocess="faultmodels:pause")
    config = tmp_path / "squall-serve.toml"
    config.write_text('max_concurrency = 2\n[[watches]]\nlocation = "inbox"\nspec = "template.toml"\n'
                      'pattern = "*.parquet"\nsettle_s = 2.0\npoll_s = 0.2\n')
    port = free_port()
    server = start_server(config, port)
    try:
        drop(inbox, range(10))
        wait_for_outputs(tmp_path / "out", 3, server)
        deadline = time.monotonic() + 60
        while not chunks_in_flight(squall_home):
            assert server.poll() is None and time.monotonic() < deadline, "no chunk was ever in flight"
            time.sleep(0.01)
        server.send_signal(signal.SIGKILL)  # a chunk in flight, jobs queued, files seen and not yet seen
        server.wait()
        assert chunks_in_flight(squall_home) >= 1, "the kill landed while work was in flight"
        drop(inbox, range(10, 20))
        server = start_server(config, port)
        wait_for_outputs(tmp_path / "out", 20, server)
        assert_no_second_job(squall_home, 20)
        listing = httpx.get(f"http://127.0.0.1:{port}/jobs?limit=100", headers=AUTH).json()
    finally:
        server.send_signal(signal.SIGINT)
        server.communicate(timeout=60)
    jobs = listing["jobs"]
    assert len(jobs) == 20 and {job["state"] for job in jobs} == {"SUCCEEDED"} and {job["source"] for job in jobs} == {"watch"}
    with sqlite3.connect(squall_home / "squall.db") as store:
        assert store.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 20
    assert complete_outputs(tmp_path / "out") == {f"f{i:02d}" for i in range(20)}
    for index in range(20):
        assert sorted(read_output(tmp_path / "out" / f"f{index:02d}")["id"]) == list(range(index * ROWS, (index + 1) * ROWS))
