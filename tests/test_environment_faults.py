"""A full or read-only output is the machine's fault, not a chunk's: the job stops at once with the reason,
splits and dead-letters nothing, keeps its committed parts, and `squall resume` finishes it once fixed.

The disks are real: a tmpfs of a few MB mounted as the output's filesystem and a read-only bind mount
(the suite runs as root; these tests fail, never skip, where mounting is not allowed).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import ContextManager, Iterator

import numpy as np
import pandas as pd
from support.cli import run_cli
from support.data import make_frame, write_frame
from support.expect import expected_proba

import squall

ROWS = 40_000
CHUNK_ROWS = 4_000


@contextmanager
def mounted(*mount: list[str], target: Path) -> Iterator[Path]:
    """Mount ``target`` (the first command mounts, any later one changes its flags); unmount however the test ends."""
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", *mount[0]], check=True, capture_output=True)
    try:
        for command in mount[1:]:
            subprocess.run(["mount", *command], check=True, capture_output=True)
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=True, capture_output=True)


def tmpfs(target: Path, size: str) -> ContextManager[Path]:
    return mounted(["-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(target)], target=target)


def read_only(folder: Path) -> ContextManager[Path]:
    """``folder`` bound onto itself, read-only."""
    return mounted(["--bind", str(folder), str(folder)], ["-o", "remount,bind,ro", str(folder)], target=folder)


def chunk_rows_of(state: Path, job_id: str) -> list[tuple[int, str, int, int, int]]:
    """(chunk, state, attempts counted against it, kills, parent) for every chunk of the job."""
    with sqlite3.connect(state / "squall.db") as db:
        return db.execute(
            "SELECT chunk_id, state, attempts - attempt_base, kills, parent FROM chunks WHERE job_id=? ORDER BY chunk_id",
            (job_id,),
        ).fetchall()


def committed_parts(output: Path) -> dict[str, tuple[int, int]]:
    """Each committed part's (inode, mtime in ns): a part rewritten after the fault would change them."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in output.glob("part-*.parquet")}


def assert_stopped_cleanly(done: subprocess.CompletedProcess[str], job_id: str, reason: str, state: Path) -> None:
    """Exit 1 with the reason and no traceback; FAILED with the reason and how to finish it; nothing blamed."""
    assert done.returncode == 1, done.stderr
    assert reason in done.stderr and "Traceback" not in done.stderr
    job = squall.status(job_id).job
    assert job.state == "FAILED" and reason in (job.message or "") and f"squall resume {job_id}" in (job.message or "")
    assert reason in (state / "jobs" / job_id / "squall.log").read_text()
    chunks = chunk_rows_of(state, job_id)
    assert len(chunks) == ROWS // CHUNK_ROWS, "a chunk was split"
    assert {c[1] for c in chunks} <= {"done", "pending"}, "a chunk was dead-lettered or left leased"
    assert all(counted <= 1 and kills == 0 for _, _, counted, kills, _ in chunks), "the fault was counted against a chunk"
    assert all(counted == 0 for _, chunk_state, counted, _, _ in chunks if chunk_state == "pending")


def test_a_full_output_disk_stops_the_job_with_the_reason_and_resume_finishes_it(linear_model, tmp_path, squall_home):
    frame = make_frame(ROWS, seed=3)
    write_frame(frame, tmp_path / "in" / "data.parquet", "parquet", row_group_size=1_000)
    with tmpfs(tmp_path / "disk", "3m") as disk:
        filler = disk / "filler.bin"
        filler.write_bytes(os.urandom(2_600 * 1024))  # leaves room for a few parts of the ~650 KB output, not all
        output = disk / "out"
        args = ["--model", str(linear_model), "--input", str(tmp_path / "in"), "--output", str(output), "--key", "id",
                "--method", "predict_proba", "--chunk-rows", str(CHUNK_ROWS), "--workers", "2", "--job-id", "full", "-q"]
        stopped = run_cli("run", *args)
        assert_stopped_cleanly(stopped, "full", "No space left on device", squall_home)
        counts = squall.status("full").counts
        assert counts.count("done") >= 1 and counts.count("pending") >= 1, "the disk filled before or after every commit"
        kept = committed_parts(output)
        assert len(kept) == counts.count("done")

        with read_only(output):
            refused = run_cli("resume", "full", "-q")
            assert_stopped_cleanly(refused, "full", "Read-only file system", squall_home)
        assert committed_parts(output) == kept

        filler.unlink()
        resumed = run_cli("resume", "full", "-q")
        assert resumed.returncode == 0, resumed.stderr
        assert resumed.stdout.strip().splitlines()[-1].startswith(f"SUCCEEDED {ROWS} rows")
        assert {name: kept_as for name, kept_as in committed_parts(output).items() if name in kept} == kept
        manifest = json.loads((output / "_manifest.json").read_text())
        assert manifest["rows"]["reconciled"] and manifest["dead_chunks"] == []
        got = pd.concat([pd.read_parquet(output / part["path"]) for part in manifest["parts"]]).set_index("id")
        assert sorted(p.name for p in output.glob("part-*")) == sorted(part["path"] for part in manifest["parts"])
        assert not got.index.duplicated().any() and len(got) == ROWS
        want = expected_proba(linear_model, frame)
        got = got.sort_index()
        assert got.index.equals(want.index)
        np.testing.assert_allclose(got[want.columns].to_numpy(), want.to_numpy(), rtol=1e-12)


def test_a_read_only_output_is_a_usage_error_naming_the_folder_before_any_work(linear_model, tmp_path, squall_home):
    write_frame(make_frame(500), tmp_path / "in" / "data.parquet", "parquet")
    (tmp_path / "locked").mkdir()
    with read_only(tmp_path / "locked") as locked:
        for output in (locked, locked / "results"):
            done = run_cli("run", "--model", str(linear_model), "--input", str(tmp_path / "in"), "--output", str(output),
                           "--key", "id", "-q")
            assert done.returncode == 2, done.stderr
            assert "Traceback" not in done.stderr
            assert f"cannot create or write the output {output}" in done.stderr.replace("\n", "")
            assert "Read-only file system" in done.stderr
        assert not list(locked.iterdir())
