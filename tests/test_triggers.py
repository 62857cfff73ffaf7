"""Triggers: a job per new file in a watched folder or object-store prefix, and cron schedules; each exactly once."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from support.cli import SQUALL, run_cli
from support.data import make_frame, read_output, write_frame
from support.s3 import filesystem
from support.s3server import S3Server
from support.triggers import (
    POLL_S,
    ROWS,
    SETTLE_S,
    assert_no_second_job,
    complete_outputs,
    drop_quick,
    drop_renamed,
    drop_slowly,
    parquet_bytes,
    template,
)

from squall.errors import JobStateError, UsageError
from squall.spec import JobSpec
from squall.triggers import start_triggers
from squall.triggers.rules import schedule_rule, watch_rule
from squall.triggers.schedule import ScheduleTrigger
from squall.triggers.seen import SeenRecord
from squall.triggers.template import file_job_id, file_spec
from squall.triggers.watch import run_in_process


def start_watch(inbox: Path, spec: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*SQUALL, "watch", str(inbox), "--spec", str(spec), "--settle-s", str(SETTLE_S), "--poll-s", str(POLL_S), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ),
    )


def work_in_flight(home: Path) -> bool:
    """Whether a job is recorded and one of its chunks is leased to a worker right now."""
    if not (home / "squall.db").exists():
        return False  # connecting would create it
    try:
        with sqlite3.connect(home / "squall.db") as store:
            return bool(store.execute("SELECT COUNT(*) FROM chunks WHERE state = 'leased'").fetchone()[0])
    except sqlite3.OperationalError:  # not created yet
        return False


def mid_job(out: Path) -> bool:
    return any(not (p.parent / "_SUCCESS").exists() for p in out.glob("*/_squall_job.json"))


def wait_for(out: Path, count: int, process: subprocess.Popen[str], timeout_s: float = 150) -> None:
    deadline = time.monotonic() + timeout_s
    while len(complete_outputs(out)) < count:
        if process.poll() is not None:
            raise AssertionError(f"watch exited {process.returncode}: {process.stderr.read() if process.stderr else ''}")
        if time.monotonic() > deadline:
            raise AssertionError(f"only {sorted(complete_outputs(out))} of {count} outputs after {timeout_s} s")
        time.sleep(0.2)


def stop(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=60)
    return out


def assert_exactly(home: Path, out: Path, indexes: range) -> None:
    """One job per file (seen record and job store agree), and each file's output holds exactly its rows."""
    with sqlite3.connect(home / "triggers.db") as seen:
        rows = seen.execute("SELECT key, job_id, state, result FROM seen").fetchall()
    assert sorted(Path(key).name for key, *_ in rows) == [f"f{i:02d}.parquet" for i in indexes]
    assert {state for _, _, state, _ in rows} == {"submitted"} and {r for *_, r in rows} == {"SUCCEEDED"}
    with sqlite3.connect(home / "squall.db") as store:
        jobs = [job_id for (job_id,) in store.execute("SELECT job_id FROM jobs")]
    assert sorted(jobs) == sorted(job_id for _, job_id, _, _ in rows)  # no file ran twice, no stray job
    assert complete_outputs(out) == {f"f{i:02d}" for i in indexes}
    for index in indexes:
        frame = read_output(out / f"f{index:02d}")
        assert sorted(frame["id"]) == list(range(index * ROWS, (index + 1) * ROWS))
        assert frame["prediction"].notna().all()


def test_twenty_files_give_twenty_jobs_some_written_slowly_one_renamed(
    tmp_path: Path, linear_model: Path, squall_home: Path
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / ".hidden.parquet").write_bytes(b"never counts")
    spec = template(tmp_path, linear_model)
    watcher = start_watch(inbox, spec)
    try:
        slow = [threading.Thread(target=drop_slowly, args=(inbox, i)) for i in range(14, 19)]
        slow.append(threading.Thread(target=drop_renamed, args=(inbox, 19)))
        for thread in slow:
            thread.start()
        for index in range(14):
            drop_quick(inbox, index)
        for thread in slow:
            thread.join()
        wait_for(tmp_path / "out", 20, watcher)
        assert_no_second_job(squall_home, 20)
    finally:
        printed = stop(watcher)
    assert len(printed.strip().splitlines()) == 20 and printed.count("SUCCEEDED, 40 rows") == 20
    assert not (inbox / "f19.parquet.tmp").exists()
    assert_exactly(squall_home, tmp_path / "out", range(20))


def test_restart_after_sigkill_processes_every_file_once(tmp_path: Path, linear_model: Path, squall_home: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    spec = template(tmp_path, linear_model)
    first = start_watch(inbox, spec)
    try:
        for index in range(10):
            drop_quick(inbox, index)
        wait_for(tmp_path / "out", 3, first)
        deadline = time.monotonic() + 20
        while not mid_job(tmp_path / "out") and time.monotonic() < deadline:
            time.sleep(0.02)  # kill while a job has claimed its output but not finished
    finally:
        first.kill()
        first.wait()
    with sqlite3.connect(squall_home / "triggers.db") as seen:
        cut_short = seen.execute("SELECT job_id FROM seen WHERE state='claimed'").fetchall()
    assert len(cut_short) == 1  # killed mid-job: the restart must finish that job, not start another
    for index in range(10, 20):
        drop_quick(inbox, index)
    second = start_watch(inbox, spec)
    try:
        wait_for(tmp_path / "out", 20, second)
        assert_no_second_job(squall_home, 20)
    finally:
        stop(second)
    assert_exactly(squall_home, tmp_path / "out", range(20))


def test_once_processes_what_is_there_and_remembers_it(tmp_path: Path, linear_model: Path, squall_home: Path) -> None:
    inbox = tmp_path / "inbox"
    for index in range(2):
        drop_quick(inbox, index)
    spec = template(tmp_path, linear_model)
    args = ["watch", str(inbox), "--spec", str(spec), "--settle-s", "0.2", "--poll-s", "0.1", "--once"]
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("SUCCEEDED") == 2
    drop_quick(inbox, 2)
    second = run_cli(*args)
    assert second.returncode == 0, second.stderr
    assert second.stdout.count("SUCCEEDED") == 1 and "f02.parquet" in second.stdout
    assert_exactly(squall_home, tmp_path / "out", range(3))


def test_sigterm_stops_mid_job_and_the_next_start_finishes_that_job(
    tmp_path: Path, linear_model: Path, squall_home: Path
) -> None:
    inbox = tmp_path / "inbox"
    for index in range(3):
        drop_quick(inbox, index)
    spec = template(tmp_path, linear_model)
    watcher = start_watch(inbox, spec)
    deadline = time.monotonic() + 60
    while not work_in_flight(squall_home) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert work_in_flight(squall_home), "no chunk was in flight within 60 s"
    watcher.send_signal(signal.SIGTERM)
    assert watcher.wait(60) in (0, 130)
    with sqlite3.connect(squall_home / "squall.db") as store:
        unfinished = store.execute("SELECT state FROM jobs WHERE state != 'SUCCEEDED'").fetchall()
    assert len(unfinished) == 1 and unfinished[0][0] in ("PENDING", "RUNNING", "CANCELLED")  # stopped mid-job
    again = run_cli("watch", str(inbox), "--spec", str(spec), "--settle-s", "0.2", "--poll-s", "0.1", "--once")
    assert again.returncode == 0, again.stderr
    assert_exactly(squall_home, tmp_path / "out", range(3))


def test_output_with_placeholder_and_errors_name_what_to_change(tmp_path: Path, linear_model: Path) -> None:
    inbox = tmp_path / "inbox"
    drop_quick(inbox, 0)
    spec = template(tmp_path, linear_model)
    missing = run_cli("watch", str(tmp_path / "nope"), "--spec", str(spec), "--once")
    assert missing.returncode == 2 and "no such folder" in missing.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text(spec.read_text() + "chunk_rows = -3\n")
    refused = run_cli("watch", str(inbox), "--spec", str(bad), "--once")
    assert refused.returncode == 2 and "chunk_rows" in refused.stderr
    unknown = tmp_path / "unknown.toml"
    unknown.write_text(spec.read_text().replace('/out"', '/out-{nope}"'))
    refused = run_cli("watch", str(inbox), "--spec", str(unknown), "--once")
    assert refused.returncode == 2 and "{nope}" in refused.stderr and "`output`" in refused.stderr

    rule = watch_rule(location=str(inbox), template={"model": "m.joblib", "output": "/o/{date}/{stem}.d"})
    filled = file_spec(rule.template, f"{inbox}/a.b.csv.gz", datetime(2026, 5, 4, tzinfo=timezone.utc), "j")
    assert filled.output == "/o/2026-05-04/a.b.d" and filled.input == [f"{inbox}/a.b.csv.gz"]
    plain = file_spec({"model": "m.joblib", "output": "/o"}, "s3://b/in/day.2026-05-04.parquet", datetime.now(timezone.utc), "j")
    assert plain.output == "/o/day.2026-05-04"  # no placeholder: <output>/<stem>/
    assert file_job_id("r", "/x/a.csv") == file_job_id("r", "/x/a.csv") != file_job_id("r", "/x/b.csv")


def test_start_triggers_submits_each_file_once_and_resubmits_a_claim_cut_short(
    tmp_path: Path, linear_model: Path, squall_home: Path
) -> None:
    """The service's entry point: a claim written just before a crash is handed over again, with the same job id."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    rule = watch_rule(location=str(inbox), spec=str(template(tmp_path, linear_model)), settle_s=0.3, poll_s=0.1)
    crashed = file_spec(rule.template, str(inbox / "gone.parquet"), datetime.now(timezone.utc), "crashed-job")
    seen = SeenRecord(squall_home)
    assert seen.claim(rule.rule_id(), str(inbox / "gone.parquet"), "crashed-job", crashed.to_json())
    submitted: list[tuple[str, str]] = []
    lock = threading.Lock()

    def submit(spec: JobSpec, priority: int = 0, source: str = "api") -> str:  # the service scheduler's signature
        with lock:
            submitted.append((str(spec.job_id), source))
        if spec.job_id == "crashed-job":  # the queue got it just before the crash, as the scheduler says so
            raise JobStateError("a job named 'crashed-job' already exists")
        return str(spec.job_id)

    with pytest.raises(UsageError, match="no such folder"):
        start_triggers([("watch", watch_rule(location=str(tmp_path / "missing"), template=rule.template))], submit, squall_home, threading.Event())

    halt = threading.Event()
    threads = start_triggers([("watch", rule)], submit, squall_home, halt)
    try:
        for index in range(3):
            drop_quick(inbox, index)
        deadline = time.monotonic() + 30
        while len(submitted) < 4 and time.monotonic() < deadline:
            time.sleep(0.1)
        quiet_until = time.monotonic() + 2 * (rule.settle_s + rule.poll_s) + 1.0  # past a settle and a listing, twice
        while time.monotonic() < quiet_until:
            assert len(submitted) == 4, submitted
            time.sleep(rule.poll_s / 2)
    finally:
        halt.set()
        for thread in threads:
            thread.join(10)
    assert submitted[0] == ("crashed-job", "watch")
    assert sorted(submitted[1:]) == sorted((file_job_id(rule.rule_id(), str(inbox / f"f{i:02d}.parquet")), "watch") for i in range(3))
    assert {entry.state for entry in seen.entries()} == {"submitted"}


def test_missed_schedule_runs_once_with_its_date_and_is_remembered(
    tmp_path: Path, linear_model: Path, squall_home: Path
) -> None:
    inputs = tmp_path / "daily"
    write_frame(make_frame(ROWS), inputs / "day-2026-11-27.parquet", "parquet")
    rule = schedule_rule(name="nightly", cron="0 2 * * *", template={
        "model": str(linear_model), "input": [f"{inputs}/day-{{date}}.parquet"],
        "output": f"{tmp_path}/scored/{{date}}", "workers": 1, "fork": False, "key": ["id"],
    })
    now = [datetime(2026, 11, 20, 1, 0, tzinfo=timezone.utc)]
    ran: list[tuple[str, str]] = []

    def runner(spec: JobSpec) -> str:
        state, _ = run_in_process(spec)
        ran.append((str(spec.job_id), state))
        return state

    seen = SeenRecord(squall_home)
    trigger = ScheduleTrigger(rule, seen, runner, clock=lambda: now[0])
    assert trigger.tick() is None  # the first start fires nothing for the past
    now[0] = datetime(2026, 11, 27, 3, 30, tzinfo=timezone.utc)  # down for a week: seven runs missed
    assert trigger.tick() == datetime(2026, 11, 27, 2, 0, tzinfo=timezone.utc)
    assert trigger.tick() is None
    assert ran == [("nightly-20261127T020000Z", "SUCCEEDED")]
    assert len(read_output(tmp_path / "scored" / "2026-11-27")) == ROWS
    seen.close()

    restarted = ScheduleTrigger(rule, SeenRecord(squall_home), runner, clock=lambda: now[0])
    assert restarted.recover() == 0 and restarted.tick() is None  # remembered across the restart
    now[0] = datetime(2026, 11, 29, 2, 0, tzinfo=timezone.utc)
    assert restarted.tick() == datetime(2026, 11, 29, 2, 0, tzinfo=timezone.utc)
    refused = restarted.seen.entries()[-1]  # no input for that day: recorded as refused, not retried forever
    assert refused.job_id == "nightly-20261129T020000Z" and str(refused.result).startswith("REFUSED") and len(ran) == 1
    assert restarted.seen.last_fired("schedule:nightly") == datetime(2026, 11, 29, 2, 0, tzinfo=timezone.utc)


def test_a_run_is_due_at_its_cron_time_not_before() -> None:
    from squall.triggers.schedule import due_run

    rule = schedule_rule(name="n", cron="0 2 * * *", timezone="Europe/Berlin", template={})
    last = datetime(2026, 11, 26, 1, 0, tzinfo=timezone.utc)  # 02:00 in Berlin
    on_time = datetime(2026, 11, 27, 1, 0, tzinfo=timezone.utc)
    assert due_run(rule, last, on_time) == on_time
    assert due_run(rule, last, datetime(2026, 11, 27, 0, 59, 59, 500_000, tzinfo=timezone.utc)) is None
    assert str(due_run(rule, last, on_time)) == "2026-11-27 02:00:00+01:00"  # {date} and {time} are Berlin's


def test_schedule_rule_errors_name_the_field() -> None:
    from squall.errors import SpecError
    from squall.triggers.schedule import check

    with pytest.raises(SpecError, match="`cron`"):
        check(schedule_rule(name="x", cron="every day", template={"model": "m", "input": "i", "output": "o"}))
    with pytest.raises(SpecError, match="`timezone`"):
        check(schedule_rule(name="x", cron="0 * * * *", timezone="Mars/Olympus", template={"model": "m", "input": "i", "output": "o"}))
    with pytest.raises(SpecError, match="`name`"):
        schedule_rule(name="bad name!", cron="0 * * * *")


def test_object_store_prefix_each_object_once(tmp_path: Path, linear_model: Path, squall_home: Path, s3: S3Server, bucket: str) -> None:
    fs = filesystem(s3)
    for index in range(3):
        fs.pipe_file(f"{bucket}/inbox/f{index:02d}.parquet", parquet_bytes(index))
    fs.pipe_file(f"{bucket}/inbox/f09.parquet.part", b"an upload still going")
    spec = template(tmp_path, linear_model, endpoint_url=s3.endpoint)
    args = ["watch", f"s3://{bucket}/inbox/", "--spec", str(spec), "--settle-s", "0", "--poll-s", "0.2", "--once"]
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("SUCCEEDED, 40 rows") == 3 and f"s3://{bucket}/inbox/f00.parquet" in first.stdout
    fs.pipe_file(f"{bucket}/inbox/f03.parquet", parquet_bytes(3))
    second = run_cli(*args)
    assert second.returncode == 0, second.stderr
    assert second.stdout.count("SUCCEEDED") == 1 and "f03.parquet" in second.stdout
    with sqlite3.connect(squall_home / "triggers.db") as seen:
        keys = sorted(key for (key,) in seen.execute("SELECT key FROM seen"))
    assert keys == [f"s3://{bucket}/inbox/f{i:02d}.parquet" for i in range(4)]
    assert complete_outputs(tmp_path / "out") == {f"f{i:02d}" for i in range(4)}
    for index in range(4):
        assert sorted(read_output(tmp_path / "out" / f"f{index:02d}")["id"]) == list(range(index * ROWS, (index + 1) * ROWS))
