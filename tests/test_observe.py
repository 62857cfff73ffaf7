"""What a run leaves to be seen: a REPORT record per invocation, Prometheus metrics, and a report that agrees with both."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.cli import SQUALL, run_cli
from support.data import ids_dataset

import squall

CHUNK_ROWS = 200


def _records(log: Path, kind: str) -> list[dict]:
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    return [line for line in lines if line["type"] == kind]


def _metrics(path: Path) -> dict[tuple[str, tuple], float]:
    found = {}
    for family in text_string_to_metric_families(path.read_text()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_every_invocation_of_a_job_leaves_one_report_record_that_agrees_with_the_timeline_and_the_metrics(tmp_path, monkeypatch):
    ids_dataset(tmp_path / "in", CHUNK_ROWS * 6, row_group_size=CHUNK_ROWS)
    (tmp_path / "schedule.json").write_text(json.dumps({"1": ["hang"], "3": ["crash"], "4": ["rows"]}))
    monkeypatch.setenv("FAULT_SCHEDULE", str(tmp_path / "schedule.json"))
    monkeypatch.setenv("FAULT_CHUNK_ROWS", str(CHUNK_ROWS))
    log, metrics = tmp_path / "job.log", tmp_path / "job.prom"
    done = run_cli(
        "run", "--model", "faultmodels:scheduled", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
        "--key", "id", "--features", "id_copy", "--chunk-rows", str(CHUNK_ROWS), "--batch-size", str(CHUNK_ROWS),
        "--workers", "2", "--timeout", "1.5", "--split-after", "9", "--backoff-base", "0", "--max-error-rate", "1",
        "--memory", "2048", "--log-format", "json", "--log-file", str(log), "--metrics-file", str(metrics), "--job-id", "seen",
    )
    assert done.returncode == 0, done.stderr
    summary = " ".join(done.stderr.split())  # the summary table wraps at the terminal's width
    assert re.search(r"cost \$[0-9.]+ as functions \([0-9.]+ GB-s at 2048 MB, 8 requests\) · \$[0-9.]+ on one 4-core VM", summary)

    reports = _records(log, "REPORT")
    by_attempt = {(r["chunk"], r["attempt"]): r for r in reports}
    assert len(by_attempt) == len(reports) == 8  # 6 chunks, plus the retries of the hung and the crashed one
    outcomes = {key: r["outcome"] for key, r in by_attempt.items()}
    assert outcomes == {**{(c, 1): "ok" for c in (0, 2, 4, 5)}, (1, 1): "timeout", (1, 2): "ok", (3, 1): "lost", (3, 2): "ok"}
    assert by_attempt[(4, 1)]["error_rows"] == CHUNK_ROWS // 5 and by_attempt[(4, 1)]["rows_out"] == CHUNK_ROWS * 4 // 5
    assert by_attempt[(1, 1)]["duration_ms"] >= 1500  # killed at the 1.5 s limit, not before (it would hang an hour)
    for record in reports:
        assert record["memory_size_mb"] == 2048
        shown = record["duration_ms"] + record.get("init_duration_ms", 0)  # each rounded to the microsecond
        assert shown - 0.002 <= record["billed_duration_ms"] < shown + 1.002  # the ceiling, up to that rounding
        if record["outcome"] == "ok":
            assert record["rows_in"] == CHUNK_ROWS and record["max_memory_used_mb"] > 10
    workers = _records(log, "WORKER")
    cold = [r for r in reports if "init_duration_ms" in r]
    assert len(cold) == len({(r["worker"], r["started_at"]) for r in cold}) <= len(workers)
    assert {r["worker"] for r in cold} == {0, 1}  # every lane starts cold; the killed ones again

    report = json.loads(run_cli("report", "seen", "--format", "json").stdout)
    timeline = {(i["chunk_id"], i["attempt"]): i for i in report["invocations"]}
    assert set(timeline) == set(by_attempt)
    for key, record in by_attempt.items():
        assert abs(timeline[key]["duration_s"] * 1000 - record["duration_ms"]) < 0.001
        assert timeline[key]["outcome"] == record["outcome"] and timeline[key]["worker"] == record["worker"]
        assert timeline[key]["cold_start"] == ("init_duration_ms" in record)
    assert report["summary"]["invocations"] == 8 and report["summary"]["retries"] == 2
    assert {(f["chunk_id"], f["outcome"]) for f in report["failures"]} == {(1, "timeout"), (3, "lost")}
    assert report["cost"]["requests"] == 8
    assert report["cost"]["billed_ms"] == sum(r["billed_duration_ms"] for r in reports)

    html = run_cli("report", "seen", "-o", str(tmp_path / "seen.html"))
    assert html.returncode == 0, html.stderr
    bars = re.findall(r"<rect class='bar'[^>]*data-chunk='(\d+)' data-attempt='(\d+)'[^>]*data-duration-ms='([0-9.]+)'",
                      (tmp_path / "seen.html").read_text())
    assert {(int(c), int(a)): float(ms) for c, a, ms in bars} == _rounded_durations(by_attempt)

    seen = _metrics(metrics)
    assert seen[("squall_invocations_total", (("outcome", "ok"),))] == 6
    assert seen[("squall_invocations_total", (("outcome", "timeout"),))] == 1
    assert seen[("squall_invocations_total", (("outcome", "lost"),))] == 1
    assert seen[("squall_invocation_duration_seconds_count", ())] == 8
    assert seen[("squall_rows_total", (("kind", "in"),))] == CHUNK_ROWS * 6
    assert seen[("squall_rows_total", (("kind", "error"),))] == CHUNK_ROWS // 5
    assert seen[("squall_retries_total", ())] == 2 and seen[("squall_dead_chunks_total", ())] == 0
    assert seen[("squall_cold_starts_total", ())] == len(workers)
    assert seen[("squall_queue_depth", ())] == 0 and seen[("squall_busy_workers", ())] == 0


def _rounded_durations(by_attempt: dict) -> dict:
    """The REPORT durations, rounded as the timeline writes them (3 decimals of a millisecond)."""
    return {key: round(record["duration_ms"], 3) for key, record in by_attempt.items()}


def test_max_memory_used_is_within_ten_percent_of_the_peak_psutil_saw_in_each_invocation(tmp_path, monkeypatch):
    ids_dataset(tmp_path / "in", 1_000, row_group_size=250)
    monkeypatch.setenv("ALLOC_MB", "300")
    monkeypatch.setenv("RSS_LOG", str(tmp_path / "rss.log"))
    spec = squall.JobSpec(
        model="memorymodels:allocate", input=[str(tmp_path / "in")], output=str(tmp_path / "out"), key=["id"],
        features=["id_copy"], chunk_rows=250, workers=2, log_format="json", job_id="memory",
    )
    result = squall.run(spec)
    assert result.state == "SUCCEEDED" and result.invocations == 4
    seen = {int(first): float(rss) for first, rss in (line.split() for line in (tmp_path / "rss.log").read_text().splitlines())}
    first_ids = {int(p.name[5:10]): int(pd.read_parquet(p)["id"].min()) for p in (tmp_path / "out").glob("part-*.parquet")}
    reports = _records(Path(spec.resolved_state_dir()) / "jobs" / "memory" / "squall.log", "REPORT")
    assert len(reports) == 4
    for record in reports:
        psutil_peak = seen[first_ids[record["chunk"]]]
        assert psutil_peak > 300
        assert abs(record["max_memory_used_mb"] - psutil_peak) <= 0.10 * psutil_peak, (record, psutil_peak)


def _ids_run(tmp_path: Path, *extra: str):
    return run_cli(
        "run", "--model", "faultmodels:steady", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
        "--key", "id", "--features", "id_copy", "--chunk-rows", str(CHUNK_ROWS), "--workers", "1", "-q", *extra,
    )


@pytest.mark.parametrize("field", ["metrics_file", "log_file"])
def test_a_metrics_or_log_file_that_names_a_folder_is_refused_before_any_work(tmp_path, field):
    """Regression (issue 16, defect 6): `--metrics-file DIR` ran the job to SUCCEEDED, then exited 1 with a
    traceback; `--log-file DIR` left the job PENDING with a traceback."""
    ids_dataset(tmp_path / "in", CHUNK_ROWS * 2, row_group_size=CHUNK_ROWS)
    (tmp_path / "folder").mkdir()
    done = _ids_run(tmp_path, f"--{field.replace('_', '-')}", str(tmp_path / "folder"), "--job-id", "side")
    assert done.returncode == 2, done.stderr
    assert f"`{field}` {tmp_path / 'folder'} is a folder" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()
    assert run_cli("status", "side").returncode == 2  # no job was created


def test_a_metrics_file_that_cannot_be_written_at_the_end_warns_and_keeps_the_jobs_exit_code(tmp_path):
    ids_dataset(tmp_path / "in", CHUNK_ROWS * 20, row_group_size=CHUNK_ROWS)
    metrics = tmp_path / "job.prom"
    process = subprocess.Popen(
        [*SQUALL, "run", "--model", "faultmodels:steady", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
         "--key", "id", "--features", "id_copy", "--chunk-rows", str(CHUNK_ROWS), "--workers", "1", "-q",
         "--metrics-file", str(metrics)],
        env={**os.environ, "FAULT_SLEEP": "0.1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 120
    while not list((tmp_path / "out").glob("part-*")):
        assert time.monotonic() < deadline and process.poll() is None, "the job never committed a part"
        time.sleep(0.05)
    committed = len(list((tmp_path / "out").glob("part-*")))
    metrics.mkdir()  # the path turns into a folder while the job runs: the write at the end fails
    stdout, stderr = process.communicate(timeout=240)
    assert committed < 20  # the job was still running: metrics are written after its last part
    assert process.returncode == 0, stderr
    assert "SUCCEEDED 4000 rows" in stdout and "Traceback" not in stderr
    assert f"the metrics file {metrics} (`metrics_file`) was not written" in stderr and "the job's result stands" in stderr
