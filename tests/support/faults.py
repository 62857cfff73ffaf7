"""Causing faults for real and checking what survives them: fault-model jobs, SIGKILLed workers and coordinators."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import psutil
import pyarrow.parquet as pq

import squall
import squall.api
from support.cli import SQUALL
from support.data import read_output


def ids_spec(tmp_path: Path, model: str, **fields) -> squall.JobSpec:
    """A job of the fault model ``model`` over ``tmp_path/in`` (ids), writing to ``tmp_path/out`` unless ``output`` says."""
    fields.setdefault("output", str(tmp_path / "out"))
    return squall.JobSpec(
        model=f"faultmodels:{model}", input=[str(tmp_path / "in")], key=["id"], features=["id_copy"], **fields,
    )


def assert_exact_output(output: Path, expected_ids: set[int]) -> pd.DataFrame:
    """Every expected id exactly once, each predicted as id * 2, and every part matching the manifest."""
    got = read_output(output)
    assert not got["id"].duplicated().any()
    assert set(got["id"]) == expected_ids
    np.testing.assert_array_equal(got["prediction"].to_numpy(), got["id"].to_numpy() * 2.0)
    manifest = json.loads((output / "_manifest.json").read_text())
    ranges: dict[str, list[tuple[int, int]]] = {}  # a merged file holds several chunks' rows, each a range of it
    for part in manifest["parts"]:
        start = part.get("first_row", 0)
        ranges.setdefault(part["path"], []).append((start, start + part["rows"]))
    for path, spans in ranges.items():
        spans.sort()
        assert [end for _, end in spans[:-1]] == [start for start, _ in spans[1:]] and spans[0][0] == 0
        assert pq.ParquetFile(output / path).metadata.num_rows == spans[-1][1]
    assert sorted(p.name for p in output.glob("part-*")) == sorted(ranges)
    assert not (output / "_tmp").exists()
    return got


def worker_pids(coordinator_pid: int) -> list[int]:
    """Workers of a coordinator: spawned ones, and those forked by its fork server."""
    try:
        descendants = psutil.Process(coordinator_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    pids = []
    for process in descendants:
        try:
            command = " ".join(process.cmdline())
            parent = " ".join(process.parent().cmdline()) if process.parent() else ""
        except psutil.Error:
            continue
        if "squall.backends.local.worker" in command or "squall.backends.local.zygote" in parent:
            pids.append(process.pid)
    return pids


def run_killing_workers(
    spec: squall.JobSpec, seed: int, max_kills: int, every_s: float = 0.5, victims: Callable[[], list[int]] | None = None
) -> tuple[squall.JobResult, list[int]]:
    """Run ``spec`` here while a thread SIGKILLs a random worker every ``every_s`` (at most ``max_kills``);
    ``victims`` lists the worker pids to choose from (default: this process's worker processes)."""
    kills: list[int] = []
    done = threading.Event()

    def killer() -> None:
        rng = random.Random(seed)
        while not done.wait(every_s) and len(kills) < max_kills:
            pids = victims() if victims else worker_pids(os.getpid())
            if pids:
                victim = rng.choice(pids)
                os.kill(victim, signal.SIGKILL)
                kills.append(victim)

    thread = threading.Thread(target=killer)
    thread.start()
    try:
        return squall.run(spec), kills
    finally:
        done.set()
        thread.join()


def done_chunks(job_id: str) -> int:
    state = Path(os.environ["SQUALL_HOME"]) / "squall.db"
    if not state.exists():
        return 0
    try:
        with sqlite3.connect(state) as db:
            row = db.execute("SELECT COUNT(*) FROM chunks WHERE job_id=? AND state='done'", (job_id,)).fetchone()
    except sqlite3.OperationalError:  # the store is being created
        return 0
    return int(row[0])


def kill_coordinator_mid_job(args: list[str], env: dict[str, str], job_id: str, after_chunks: int) -> None:
    """Run ``squall ARGS`` and SIGKILL it once ``after_chunks`` chunks are committed, while it still runs."""
    process = subprocess.Popen([*SQUALL, *args], env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None and done_chunks(job_id) < after_chunks:
        time.sleep(0.2)
    assert process.poll() is None, process.stderr.read() if process.stderr else ""
    assert done_chunks(job_id) >= after_chunks
    process.send_signal(signal.SIGKILL)
    process.wait()
