"""``squall serve``: the HTTP API, token auth, allowed roots, the job queue's limits and the warm pool."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any

import faultmodels
import httpx
import joblib
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from support.cli import run_cli
from support.data import FEATURES, ids_dataset, make_frame, read_output, write_frame
from support.service import FINAL, free_port, live_service, serve_process

import squall
from squall.cli import main
from squall.errors import SpecError
from squall.service.app import create_app
from squall.service.config import ServeConfig, load_config
from squall.spec import build_spec

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _config(home: Path, **values: Any) -> ServeConfig:
    return ServeConfig(state_dir=str(home), token=TOKEN, **values)


def _steady(folder: Path, output: Path, **extra: Any) -> dict[str, Any]:
    return {"model": "faultmodels:steady", "input": [str(folder)], "output": str(output), "key": ["id"],
            "features": ["id_copy"], **extra}


def _settled(app: Any, timeout: float = 60) -> None:
    """Wait until no job runs and every warm pool is back and ready (a job's thread hands its pool back after its state is final)."""
    deadline = time.monotonic() + timeout
    while app.state.scheduler.running() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert app.state.scheduler.pool.wait_ready(max(1.0, deadline - time.monotonic()))


def _wait(get: Any, job_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        view = get(f"/jobs/{job_id}", headers=AUTH).json()
        if view["state"] in FINAL or time.monotonic() > deadline:
            return dict(view)
        time.sleep(0.1)


@pytest.fixture
def finished_job(tmp_path: Path) -> str:
    """A job run by the Python API in the service's state directory (the CLI's jobs are the service's too)."""
    ids_dataset(tmp_path / "done-in", 1_000, row_group_size=500)
    spec = squall.JobSpec(**_steady(tmp_path / "done-in", tmp_path / "done-out"), chunk_rows=500, workers=1, job_id="finished")
    assert squall.run(spec).state == "SUCCEEDED"
    return "finished"


ROUTES = [
    ("GET", "/jobs", 200), ("POST", "/jobs", 422), ("GET", "/jobs/finished", 200), ("GET", "/jobs/finished/chunks", 200),
    ("GET", "/jobs/finished/dlq", 200), ("POST", "/jobs/finished/cancel", 409), ("POST", "/jobs/finished/redrive", 409),
    ("POST", "/jobs/finished/resume", 409), ("GET", "/jobs/finished/report", 200), ("GET", "/jobs/finished/timeline", 200),
    ("GET", "/metrics", 200), ("GET", "/", 200), ("GET", "/openapi.json", 200),
]


@pytest.mark.parametrize(("method", "path", "status"), ROUTES)
def test_every_route_but_healthz_needs_the_token(squall_home, finished_job, method, path, status):
    with TestClient(create_app(_config(squall_home))) as client:
        body = {"json": {"model": "m"}} if method == "POST" and path == "/jobs" else {}
        assert client.request(method, path, **body).status_code == 401
        assert client.request(method, path, headers={"Authorization": "Bearer wrong"}, **body).status_code == 401
        assert client.request(method, path, headers=AUTH, **body).status_code == status
        assert client.get("/healthz").status_code == 200


def test_a_symlink_made_while_a_job_waits_in_the_queue_does_not_lead_it_out_of_the_allowed_roots(squall_home, tmp_path,
                                                                                                   monkeypatch):
    monkeypatch.setenv("FAULT_SLEEP", "0.5")
    allowed = tmp_path / "allowed"
    ids_dataset(allowed / "busy", 2_000, row_group_size=500)
    ids_dataset(allowed / "later", 100, row_group_size=100)
    secret = ids_dataset(tmp_path / "secret", 100, row_group_size=100)
    config = _config(squall_home, allowed_roots=[str(allowed)], max_concurrency=1, max_running_jobs=1)
    with TestClient(create_app(config)) as client:
        busy = client.post("/jobs", json=_steady(allowed / "busy", allowed / "o1", chunk_rows=500, workers=1), headers=AUTH)
        waiting = client.post("/jobs", json=_steady(allowed / "later", allowed / "o2", workers=1), headers=AUTH)
        assert busy.status_code == waiting.status_code == 201
        assert client.get(f"/jobs/{waiting.json()['id']}", headers=AUTH).json()["state"] == "QUEUED"
        (allowed / "later" / "ids-0.parquet").unlink()
        (allowed / "later" / "ids-0.parquet").symlink_to(secret / "ids-0.parquet")
        refused = _wait(client.get, waiting.json()["id"])
        assert _wait(client.get, busy.json()["id"])["state"] == "SUCCEEDED"
    assert refused["state"] == "FAILED" and "outside the allowed roots" in refused["message"]
    assert not (allowed / "o2").exists()


def test_the_dashboard_token_link_sets_a_cookie_the_page_requests_then_carry(squall_home):
    with TestClient(create_app(_config(squall_home))) as client:
        assert client.get("/?token=wrong").status_code == 401
        answer = client.get(f"/?token={TOKEN}")
        assert answer.status_code == 200 and "<title>squall</title>" in answer.text
        assert client.get("/jobs").status_code == 200  # the cookie is sent
        assert TOKEN not in client.cookies.values(), "the cookie holds a derived value, not the token"
        assert client.post("/jobs/any/cancel").status_code == 401, "the cookie opens reading routes only"


def test_a_spec_with_errors_is_422_with_the_field_and_the_cli_message(squall_home, tmp_path):
    with TestClient(create_app(_config(squall_home))) as client:
        missing = client.post("/jobs", json={"input": ["x"], "output": str(tmp_path / "o")}, headers=AUTH)
        assert missing.status_code == 422 and missing.json()["fields"] == ["model"]
        bad = {"model": "m", "input": ["x"], "output": "o", "chunk_rows": -5}
        answer = client.post("/jobs", json=bad, headers=AUTH)
        assert answer.status_code == 422 and answer.json()["fields"] == ["chunk_rows"]
        with pytest.raises(SpecError) as cli_error:
            build_spec(bad, environ={})
        assert answer.json()["detail"] == str(cli_error.value)
        typo = client.post("/jobs", json={"modle": "m", "input": ["x"], "output": "o"}, headers=AUTH).json()
        assert typo["fields"] == ["modle"] and "did you mean `model`" in typo["detail"]
        own = client.post("/jobs", json={"model": "m", "input": ["x"], "output": "o", "state_dir": "/tmp"}, headers=AUTH)
        assert own.status_code == 422 and own.json()["fields"] == ["state_dir"]


def test_unknown_job_ids_are_404_on_every_job_route(squall_home):
    with TestClient(create_app(_config(squall_home))) as client:
        for job_id in ("nope", "..x", "a%2F..%2Fb", "-x", "9" * 65):
            for method, suffix in [("GET", ""), ("GET", "/chunks"), ("GET", "/dlq"), ("GET", "/report"), ("GET", "/timeline"),
                                   ("POST", "/cancel"), ("POST", "/redrive"), ("POST", "/resume")]:
                answer = client.request(method, f"/jobs/{job_id}{suffix}", headers=AUTH)
                assert answer.status_code == 404, (method, job_id, suffix, answer.text)


def test_locations_outside_the_allowed_roots_are_refused_even_through_dots_and_symlinks(squall_home, tmp_path):
    allowed = tmp_path / "allowed"
    ids_dataset(allowed / "in", 100, row_group_size=100)
    secret = ids_dataset(tmp_path / "secret", 100, row_group_size=100)
    (allowed / "door").symlink_to(secret)  # a folder link leading out
    (allowed / "in2").mkdir()
    (allowed / "in2" / "stolen.parquet").symlink_to(secret / "ids-0.parquet")  # a file link inside an allowed folder
    config = _config(squall_home, allowed_roots=[str(allowed)], max_concurrency=1)
    with TestClient(create_app(config)) as client:
        def submit(inputs: str, output: str) -> httpx.Response:
            return client.post("/jobs", json=_steady(Path(inputs), Path(output), workers=1), headers=AUTH)

        assert submit(str(secret), str(allowed / "o1")).status_code == 403
        assert submit(f"{allowed}/../secret", str(allowed / "o2")).status_code == 403
        assert submit(str(allowed / "door"), str(allowed / "o3")).status_code == 403
        assert submit(str(allowed / "in2"), str(allowed / "o4")).status_code == 403
        assert submit(str(allowed / "in"), str(tmp_path / "elsewhere")).status_code == 403
        assert submit(str(allowed / "in"), f"{allowed}/../escaped").status_code == 403
        chained = submit(f"simplecache::{secret}", str(allowed / "o6"))  # fsspec would open what the chain names
        assert chained.status_code == 403 and "chains filesystems" in chained.json()["detail"]
        assert submit(f"file://{secret}", str(allowed / "o7")).status_code == 403
        foreign_model = client.post("/jobs", json={**_steady(allowed / "in", allowed / "o8"), "model": str(secret / "ids-0.parquet")},
                                    headers=AUTH)
        assert foreign_model.status_code == 403 and "`model`" in foreign_model.json()["detail"]
        refused = submit(str(allowed / "door"), str(allowed / "o5")).json()["detail"]
        assert "outside the allowed roots" in refused and str(secret) in refused
        accepted = submit(str(allowed / "in"), str(allowed / "out"))
        assert accepted.status_code == 201
        assert _wait(client.get, accepted.json()["id"])["state"] == "SUCCEEDED"


def test_a_10000_row_job_over_http_writes_what_the_cli_writes(squall_home, tmp_path, linear_model):
    write_frame(make_frame(10_000, seed=3), tmp_path / "in" / "data.parquet", "parquet", row_group_size=1_000)
    spec = {"model": str(linear_model), "input": [str(tmp_path / "in")], "output": str(tmp_path / "http-out"), "key": ["id"],
            "method": "predict_proba", "chunk_rows": 2_000, "workers": 2}
    with live_service(_config(squall_home, max_concurrency=2)) as (url, _):
        with httpx.Client(base_url=url, timeout=30) as client:
            created = client.post("/jobs", json=spec, headers=AUTH)
            assert created.status_code == 201
            job_id = created.json()["id"]
            view = _wait(client.get, job_id)
            assert view["state"] == "SUCCEEDED" and view["rows_out"] == 10_000 and view["progress"] == 1.0
            assert client.get(f"/jobs/{job_id}/report", headers=AUTH).json()["summary"]["rows_out"] == 10_000
    cli = run_cli("run", "--model", str(linear_model), "--input", str(tmp_path / "in"), "--output", str(tmp_path / "cli-out"),
                  "--key", "id", "--method", "predict_proba", "--chunk-rows", "2000", "--workers", "2", "-q")
    assert cli.returncode == 0, cli.stderr
    by_http = read_output(tmp_path / "http-out").sort_values("id").reset_index(drop=True)
    by_cli = read_output(tmp_path / "cli-out").sort_values("id").reset_index(drop=True)
    assert by_http["id"].tolist() == list(range(10_000))
    assert by_http.equals(by_cli)
    model = joblib.load(linear_model)
    want = model.predict_proba(make_frame(10_000, seed=3)[FEATURES])
    np.testing.assert_allclose(by_http[[f"prediction_{c}" for c in model.classes_]].to_numpy(), want, rtol=1e-9)


def test_a_warm_pool_makes_small_jobs_pay_no_cold_start(squall_home, tmp_path):
    ids_dataset(tmp_path / "in", 1_000, row_group_size=250)
    config = _config(squall_home, max_concurrency=2, warm_workers={"faultmodels:steady": 2})
    with TestClient(create_app(config)) as client:
        assert client.app.state.scheduler.pool.wait_ready(120)  # type: ignore[attr-defined]
        views = []
        for index in range(2):
            job = client.post("/jobs", json=_steady(tmp_path / "in", tmp_path / f"warm-{index}", chunk_rows=250, workers=2),
                              headers=AUTH)
            views.append(_wait(client.get, job.json()["id"]))
            _settled(client.app)
        # One worker does not fit the warm pool of two: this job starts its own worker, cold.
        cold = client.post("/jobs", json=_steady(tmp_path / "in", tmp_path / "cold", chunk_rows=250, workers=1), headers=AUTH)
        views.append(_wait(client.get, cold.json()["id"]))
        reports = [client.get(f"/jobs/{v['id']}/report", headers=AUTH).json()["summary"] for v in views]
    assert [v["state"] for v in views] == ["SUCCEEDED"] * 3
    assert [(v["cold_starts"], v["worker_starts"]) for v in views[:2]] == [(0, 0), (0, 0)]
    assert [r["cold_starts"] for r in reports[:2]] == [0, 0] and reports[1]["invocations"] == 4
    assert views[2]["cold_starts"] >= 1 and reports[2]["cold_starts"] >= 1  # a job the pool does not fit starts cold


def test_jobs_beyond_the_limits_wait_visibly_in_priority_order_and_can_be_cancelled(squall_home, tmp_path, monkeypatch):
    monkeypatch.setenv("FAULT_SLEEP", "0.5")
    ids_dataset(tmp_path / "in", 2_000, row_group_size=500)
    config = _config(squall_home, max_concurrency=1, max_running_jobs=1)
    with TestClient(create_app(config)) as client:
        def submit(name: str, priority: int = 0) -> str:
            spec = _steady(tmp_path / "in", tmp_path / name, chunk_rows=500, workers=2, job_id=name)
            answer = client.post(f"/jobs?priority={priority}", json=spec, headers=AUTH)
            assert answer.status_code == 201, answer.text
            return str(answer.json()["id"])

        first = submit("first")
        deadline = time.monotonic() + 30
        while client.get(f"/jobs/{first}", headers=AUTH).json()["state"] == "QUEUED" and time.monotonic() < deadline:
            time.sleep(0.05)
        low, high = submit("low"), submit("high", priority=5)
        assert client.post("/jobs", json=_steady(tmp_path / "in", tmp_path / "x", job_id="low"), headers=AUTH).status_code == 409
        queued = client.get("/jobs?state=QUEUED", headers=AUTH).json()
        assert {j["id"]: j["queue_position"] for j in queued["jobs"]} == {high: 1, low: 2}
        assert not (squall_home / "squall.db").exists() or not _store_has(squall_home, high)  # not in the engine's store yet
        assert client.get(f"/jobs/{high}", headers=AUTH).json()["state"] == "QUEUED"
        assert client.post(f"/jobs/{low}/cancel", headers=AUTH).json() == {"id": low, "was": "QUEUED"}
        views = {job_id: _wait(client.get, job_id) for job_id in (first, high)}
        assert client.get(f"/jobs/{low}", headers=AUTH).json()["state"] == "CANCELLED"
        paged = client.get("/jobs?limit=1&offset=1", headers=AUTH).json()
    assert views[first]["state"] == views[high]["state"] == "SUCCEEDED"
    assert views[first]["workers"] == views[high]["workers"] == 1  # asked for 2, clamped to max_concurrency
    assert views[high]["started_at"] >= views[first]["finished_at"] - 0.01
    assert paged["total"] == 3 and len(paged["jobs"]) == 1


def test_a_running_job_cancelled_over_http_stops_and_can_be_resumed(squall_home, tmp_path, monkeypatch):
    monkeypatch.setenv("FAULT_SLEEP", "0.4")
    ids_dataset(tmp_path / "in", 4_000, row_group_size=250)
    with TestClient(create_app(_config(squall_home, max_concurrency=1))) as client:
        job_id = client.post("/jobs", json=_steady(tmp_path / "in", tmp_path / "out", chunk_rows=250, workers=1),
                             headers=AUTH).json()["id"]
        deadline = time.monotonic() + 60
        while client.get(f"/jobs/{job_id}", headers=AUTH).json()["rows_in"] == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert client.post(f"/jobs/{job_id}/cancel", headers=AUTH).json()["was"] == "RUNNING"
        assert _wait(client.get, job_id)["state"] == "CANCELLED"
        monkeypatch.setenv("FAULT_SLEEP", "0")
        assert client.post(f"/jobs/{job_id}/resume", headers=AUTH).status_code == 202
        assert client.get(f"/jobs/{job_id}", headers=AUTH).json()["state"] not in FINAL  # queued from the 202 on
        view = _wait(client.get, job_id)
    assert view["state"] == "SUCCEEDED" and view["rows_out"] == 4_000


def _store_has(home: Path, job_id: str) -> bool:
    with sqlite3.connect(home / "squall.db") as db:
        return db.execute("SELECT 1 FROM jobs WHERE job_id=?", (job_id,)).fetchone() is not None


def _most_at_once(home: Path) -> int:
    """The most invocations in flight at one moment, over every job, from the attempts' own start and end times."""
    with sqlite3.connect(home / "squall.db") as db:
        spans = db.execute("SELECT started_at, finished_at FROM attempts").fetchall()
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])  # an end before a start at a tie
    most = current = 0
    for _, step in edges:
        current += step
        most = max(most, current)
    return most


def test_200_jobs_submitted_at_once_all_complete_within_the_worker_limit(squall_home, tmp_path):
    ids_dataset(tmp_path / "in", 200, row_group_size=100)
    limit = 3
    config = _config(squall_home, max_concurrency=limit, max_running_jobs=3, warm_workers={"faultmodels:steady": 2},
                     warm_workers_per_job=1)
    with live_service(config) as (url, app):
        with httpx.Client(base_url=url, timeout=60) as client:
            def submit(index: int) -> str:
                spec = _steady(tmp_path / "in", tmp_path / "out" / str(index), chunk_rows=100, workers=1 + index % 3)
                answer = client.post("/jobs", json=spec, headers=AUTH)
                assert answer.status_code == 201, answer.text
                return str(answer.json()["id"])

            with ThreadPoolExecutor(16) as pool:
                ids = list(pool.map(submit, range(200)))
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline:
                listed = client.get("/jobs?limit=1000", headers=AUTH).json()
                if all(j["state"] in FINAL for j in listed["jobs"]):
                    break
                time.sleep(0.5)
            metrics = client.get("/metrics", headers=AUTH).text
        peak = app.state.scheduler.peak_busy
    assert len(set(ids)) == 200 and listed["total"] == 200
    assert {j["id"] for j in listed["jobs"]} == set(ids)
    assert [j["state"] for j in listed["jobs"]] == ["SUCCEEDED"] * 200
    assert sum(j["rows_out"] for j in listed["jobs"]) == 200 * 200
    assert peak <= limit and _most_at_once(squall_home) <= limit
    assert 'squall_service_jobs{state="SUCCEEDED"} 200.0' in metrics and "squall_rows_total" in metrics


def test_the_serve_config_reads_toml_and_the_token_from_the_environment(tmp_path):
    path = tmp_path / "squall-serve.toml"
    path.write_text('port = 9100\nallowed-roots = ["/data"]\nmax_concurrency = 8\n[warm_workers]\n"model.joblib" = 2\n')
    config = load_config(path, {"host": None}, environ={"SQUALL_TOKEN": "from-env"})
    assert (config.port, config.allowed_roots, config.max_concurrency, config.token) == (9100, ["/data"], 8, "from-env")
    assert config.warm_workers == {"model.joblib": 2}
    path.write_text("max_concurency = 8\n")
    with pytest.raises(SpecError, match="max_concurency"):
        load_config(path, environ={})


def test_serve_refuses_a_non_loopback_address_without_a_token(monkeypatch):
    monkeypatch.delenv("SQUALL_TOKEN", raising=False)
    result = CliRunner().invoke(main, ["serve", "--host", "0.0.0.0", "--port", "1"])
    assert result.exit_code == 2
    assert "without a token" in result.output and "SQUALL_TOKEN" in result.output


def _chunk_states(home: Path, job_id: str) -> dict[str, int]:
    """A job's chunks by state, read from the store as its coordinator wrote it (none before it is made)."""
    try:
        with closing(sqlite3.connect(f"file:{home / 'squall.db'}?mode=ro", uri=True)) as db:
            rows = db.execute("SELECT state, COUNT(*) FROM chunks WHERE job_id=? GROUP BY state", (job_id,)).fetchall()
    except sqlite3.OperationalError:  # the store is not made yet
        return {}
    return dict(rows)


def test_a_restart_loses_nothing_queued_jobs_wait_and_stopped_jobs_resume(squall_home, tmp_path):
    ids_dataset(tmp_path / "in", 2_000, row_group_size=250)
    config = tmp_path / "squall-serve.toml"
    config.write_text(f'state_dir = "{squall_home}"\nmax_concurrency = 1\nmax_running_jobs = 1\n')
    port = free_port()
    server = serve_process(port, "--config", str(config), env={"SQUALL_TOKEN": TOKEN, "FAULT_SLEEP": "0.3"})
    url = f"http://127.0.0.1:{port}"
    try:
        for name in ("a", "b"):
            spec = _steady(tmp_path / "in", tmp_path / name, chunk_rows=250, workers=1, job_id=name)
            assert httpx.post(f"{url}/jobs", json=spec, headers=AUTH).status_code == 201
        deadline = time.monotonic() + 120
        while not (_chunk_states(squall_home, "a").get("done", 0) >= 1 and _chunk_states(squall_home, "a").get("leased")):
            assert server.poll() is None and time.monotonic() < deadline, "job a never had a chunk done and one in flight"
            time.sleep(0.02)
        server.kill()  # SIGKILL: the server dies mid-job, as in a crash
        server.wait()
    finally:
        server.kill()
        server.communicate()
    at_crash = _chunk_states(squall_home, "a")
    assert at_crash.get("leased", 0) >= 1 and at_crash.get("pending", 0) >= 1, at_crash
    assert _chunk_states(squall_home, "b") == {}  # "b" waited in the queue, never started

    server = serve_process(port, "--config", str(config), env={"SQUALL_TOKEN": TOKEN, "FAULT_SLEEP": "0"})
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            views = [_wait(client.get, job_id) for job_id in ("a", "b")]
    finally:
        server.send_signal(signal.SIGINT)
        server.communicate(timeout=60)
    assert [(v["state"], v["rows_out"]) for v in views] == [("SUCCEEDED", 2_000), ("SUCCEEDED", 2_000)]
    rows = pd.read_parquet(tmp_path / "in").sort_values("id").reset_index(drop=True)
    for name in ("a", "b"):
        out = read_output(tmp_path / name).sort_values("id").reset_index(drop=True)
        assert out["id"].tolist() == rows["id"].tolist(), "every row exactly once"
        np.testing.assert_array_equal(out["prediction"].to_numpy(), faultmodels.steady(rows))


def test_squall_serve_runs_from_the_command_line_and_stops_cleanly_on_sigint(squall_home, tmp_path):
    port = free_port()
    server = serve_process(port, env={"SQUALL_TOKEN": TOKEN})
    try:
        assert httpx.get(f"http://127.0.0.1:{port}/jobs").status_code == 401
        assert httpx.get(f"http://127.0.0.1:{port}/jobs", headers=AUTH).json()["total"] == 0
    finally:
        server.send_signal(signal.SIGINT)
        output, _ = server.communicate(timeout=60)
    assert server.returncode == 0, output
    assert (squall_home / "service.db").exists()


def test_dead_letters_are_listed_with_their_reasons_and_a_redrive_over_http_finishes_the_job(squall_home, tmp_path, monkeypatch):
    import json

    ids_dataset(tmp_path / "in", 2_000, row_group_size=500)
    (tmp_path / "schedule.json").write_text(json.dumps({"1": ["crash"]}))  # chunk 1 crashes its first worker, then works
    monkeypatch.setenv("FAULT_SCHEDULE", str(tmp_path / "schedule.json"))
    monkeypatch.setenv("FAULT_CHUNK_ROWS", "500")
    spec = {**_steady(tmp_path / "in", tmp_path / "out", chunk_rows=500, workers=1, max_attempts=1, max_dead_chunks=1,
                      batch_size=500), "model": "faultmodels:scheduled", "job_id": "dlq"}
    with TestClient(create_app(_config(squall_home, max_concurrency=1))) as client:
        assert client.post("/jobs", json=spec, headers=AUTH).status_code == 201
        assert _wait(client.get, "dlq")["state"] == "PARTIAL"
        dead = client.get("/jobs/dlq/dlq", headers=AUTH).json()
        chunks = {c["chunk_id"]: c["state"] for c in client.get("/jobs/dlq/chunks", headers=AUTH).json()}
        assert client.post("/jobs/dlq/redrive", headers=AUTH).status_code == 202
        assert client.get("/jobs/dlq", headers=AUTH).json()["state"] not in FINAL  # queued from the 202 on
        view = _wait(client.get, "dlq")
    assert [d["chunk_id"] for d in dead] == [1] and dead[0]["attempts"][0]["outcome"] == "lost"
    assert "worker" in dead[0]["attempts"][0]["error"]
    assert chunks == {0: "done", 1: "dead", 2: "done", 3: "done"}
    assert view["state"] == "SUCCEEDED" and view["rows_out"] == 2_000


def test_a_schedule_in_the_serve_config_runs_a_missed_run_once_with_its_date(squall_home, tmp_path, linear_model):
    from datetime import datetime, timezone

    from squall.triggers.rules import schedule_rule
    from squall.triggers.seen import SeenRecord

    write_frame(make_frame(300), tmp_path / "days" / "2026-01-01" / "part.parquet", "parquet")
    rule = schedule_rule(name="yearly", cron="0 0 1 1 *", template={
        "model": str(linear_model), "input": [str(tmp_path / "days" / "{date}")], "output": str(tmp_path / "out" / "{date}"),
        "key": ["id"], "workers": 1})
    seen = SeenRecord(squall_home)
    seen.set_fired(rule.rule_id(), datetime(2024, 1, 1, tzinfo=timezone.utc))  # down since: two runs missed
    seen.close()
    with TestClient(create_app(_config(squall_home, schedules=[rule]))) as client:
        deadline = time.monotonic() + 60
        while client.get("/jobs/yearly-20260101T000000Z", headers=AUTH).status_code == 404 and time.monotonic() < deadline:
            time.sleep(0.2)
        view = _wait(client.get, "yearly-20260101T000000Z")
        jobs = client.get("/jobs", headers=AUTH).json()["jobs"]
    assert view["state"] == "SUCCEEDED" and view["rows_out"] == 300
    assert [(job["id"], job["source"]) for job in jobs] == [("yearly-20260101T000000Z", "schedule")], "missed runs run once"
    assert (tmp_path / "out" / "2026-01-01" / "_SUCCESS").exists()


def test_two_trigger_rules_with_one_name_are_refused(tmp_path):
    (tmp_path / "inbox").mkdir()
    path = tmp_path / "squall-serve.toml"
    path.write_text('[[watches]]\nlocation = "inbox"\ntemplate = {model = "m"}\n'
                    '[[watches]]\nlocation = "./inbox/"\ntemplate = {model = "m"}\n')
    with pytest.raises(SpecError, match=r"two \[\[watches\]\] share"):
        load_config(path, environ={})


def test_trigger_rules_in_the_serve_config_are_read_beside_it_and_a_wrong_field_is_named(tmp_path):
    (tmp_path / "inbox").mkdir()
    (tmp_path / "template.toml").write_text('model = "m.joblib"\noutput = "scored"\n')
    path = tmp_path / "squall-serve.toml"
    path.write_text('[[watches]]\nlocation = "inbox"\nspec = "template.toml"\n'
                    '[[schedules]]\nname = "nightly"\ncron = "0 2 * * *"\nspec = "template.toml"\n')
    config = load_config(path, environ={})
    assert config.watches[0].location == str(tmp_path / "inbox")
    assert config.watches[0].template["output"] == "scored" and config.schedules[0].cron == "0 2 * * *"
    path.write_text('[[watches]]\npath = "/data"\n')
    with pytest.raises(SpecError, match=r"`watches.0.path`"):
        load_config(path, environ={})


def test_triggers_tables_name_a_registered_trigger_and_an_unknown_kind_lists_the_registered_ones(tmp_path):
    (tmp_path / "inbox").mkdir()
    (tmp_path / "template.toml").write_text('model = "m.joblib"\noutput = "scored"\n')
    path = tmp_path / "squall-serve.toml"
    path.write_text('[[triggers]]\nkind = "watch"\nlocation = "inbox"\nspec = "template.toml"\n'
                    '[[triggers]]\nkind = "schedule"\nname = "nightly"\ncron = "0 2 * * *"\nspec = "template.toml"\n')
    rules = load_config(path, environ={}).trigger_rules()
    assert [(name, type(rule).__name__) for name, rule in rules] == [("watch", "WatchRule"), ("schedule", "ScheduleRule")]
    assert rules[0][1].location == str(tmp_path / "inbox") and rules[1][1].template["output"] == "scored"
    path.write_text('[[triggers]]\nkind = "pager"\n')
    with pytest.raises(SpecError, match=r"unknown trigger 'pager'; use one of watch, schedule"):
        load_config(path, environ={})


def test_a_warm_pool_that_lost_a_worker_during_a_job_is_replaced_and_the_next_job_still_runs_warm(squall_home, tmp_path,
                                                                                                   monkeypatch):
    import json

    ids_dataset(tmp_path / "in", 1_000, row_group_size=500)
    (tmp_path / "schedule.json").write_text(json.dumps({"1": ["crash"]}))
    monkeypatch.setenv("FAULT_SCHEDULE", str(tmp_path / "schedule.json"))
    monkeypatch.setenv("FAULT_CHUNK_ROWS", "500")
    config = _config(squall_home, max_concurrency=1, warm_workers={"faultmodels:scheduled": 1})
    with TestClient(create_app(config)) as client:
        pool = client.app.state.scheduler.pool  # type: ignore[attr-defined]
        assert pool.wait_ready(120)
        spec = {**_steady(tmp_path / "in", tmp_path / "a", chunk_rows=500, workers=1, batch_size=500, backoff_base=0),
                "model": "faultmodels:scheduled"}
        first = _wait(client.get, client.post("/jobs", json=spec, headers=AUTH).json()["id"])
        _settled(client.app)
        assert len(pool.status()) == 1
        second = _wait(client.get, client.post("/jobs", json={**spec, "output": str(tmp_path / "b")}, headers=AUTH).json()["id"])
    assert (first["state"], first["worker_starts"]) == ("SUCCEEDED", 1)  # the crashed worker was replaced during the job
    assert (second["state"], second["cold_starts"], second["worker_starts"]) == ("SUCCEEDED", 0, 0)


def test_a_path_the_filesystem_cannot_take_is_a_client_error_not_a_crash(squall_home, tmp_path):
    with TestClient(create_app(_config(squall_home, allowed_roots=[str(tmp_path)]))) as client:
        answer = client.post("/jobs", json=_steady(Path(f"{tmp_path}/in\x00"), tmp_path / "out"), headers=AUTH)
    assert answer.status_code == 400 and "not a usable path" in answer.json()["detail"]


def test_a_spec_that_cannot_be_stored_is_refused_and_a_broken_request_does_not_block_the_queue(squall_home, tmp_path):
    ids_dataset(tmp_path / "in", 100, row_group_size=100)
    with TestClient(create_app(_config(squall_home, max_concurrency=1))) as client:
        infinite = client.post("/jobs", content=b'{"model": "m", "input": ["x"], "output": "o", "timeout": Infinity}',
                               headers={**AUTH, "Content-Type": "application/json"})
        assert infinite.status_code == 400 and "finite numbers" in infinite.json()["detail"]
        scheduler = client.app.state.scheduler  # type: ignore[attr-defined]
        scheduler.queue.add("broken", "run", "{not json", 9, "api")  # a row no scheduler could read
        fine = client.post("/jobs", json=_steady(tmp_path / "in", tmp_path / "out", workers=1), headers=AUTH).json()["id"]
        assert _wait(client.get, fine)["state"] == "SUCCEEDED"
        broken = client.get("/jobs/broken", headers=AUTH).json()
    assert broken["state"] == "FAILED" and broken["message"]


def test_without_a_token_only_requests_addressed_to_a_loopback_name_are_answered(squall_home, tmp_path):
    ids_dataset(tmp_path / "in", 200, row_group_size=100)
    with live_service(ServeConfig(state_dir=str(squall_home), max_concurrency=1)) as (url, _):
        port = url.rsplit(":", 1)[1]
        with httpx.Client(base_url=url, timeout=30) as client:
            def submit(host: str, name: str) -> httpx.Response:
                spec = _steady(tmp_path / "in", tmp_path / name, workers=1, job_id=name)
                return client.post("/jobs", json=spec, headers={"Host": host})

            # What a page rebinding its own name to 127.0.0.1 sends: its own name as Host.
            for host in ("attacker.example", f"attacker.example:{port}", "localhost.attacker.example", "127.0.0.1.nip.io"):
                refused = [submit(host, "rebound"), client.get("/jobs", headers={"Host": host})]
                assert [answer.status_code for answer in refused] == [421, 421], host
                assert "localhost, 127.0.0.1 or [::1]" in refused[0].json()["detail"] and "set a token" in refused[0].json()["detail"]
            assert submit(f"127.0.0.1:{port}", "by-address").status_code == 201
            assert submit(f"localhost:{port}", "by-name").status_code == 201
            assert client.get("/jobs", headers={"Host": "[::1]"}).status_code == 200
            listed = client.get("/jobs", headers={"Host": "localhost"}).json()
            views = [_wait(client.get, job_id) for job_id in ("by-address", "by-name")]
    assert sorted(job["id"] for job in listed["jobs"]) == ["by-address", "by-name"], "a refused request queues nothing"
    assert [view["state"] for view in views] == ["SUCCEEDED", "SUCCEEDED"]
    assert not (tmp_path / "rebound").exists()


def test_with_a_token_any_host_name_is_answered(squall_home):
    with TestClient(create_app(_config(squall_home))) as client:
        assert client.get("/jobs", headers={**AUTH, "Host": "squall.internal.example"}).status_code == 200
        assert client.get("/jobs", headers={"Host": "squall.internal.example"}).status_code == 401


def test_a_location_that_names_no_place_is_refused_naming_its_field(squall_home, tmp_path):
    ids_dataset(tmp_path / "in", 100, row_group_size=100)
    with TestClient(create_app(_config(squall_home, allowed_roots=[str(tmp_path)]))) as client:
        for field, value in (("input", ["data:text/plain;base64,aWQsaWRfY29weQoxLDEK"]), ("output", "data:,x"),
                             ("model", "data:application/octet-stream," + "A" * 5_000)):
            answer = client.post("/jobs", json={**_steady(tmp_path / "in", tmp_path / "out"), field: value}, headers=AUTH)
            assert answer.status_code == 403, (field, answer.text)
            assert f"`{field}`" in answer.json()["detail"] and "`data:` URL" in answer.json()["detail"]
            assert len(answer.json()["detail"]) < 500, "a long URL is not echoed whole"


def test_a_second_serve_on_one_state_folder_exits_2_naming_the_folder_and_the_running_service(squall_home):
    first_port, second_port = free_port(), free_port()
    first = serve_process(first_port, "--state-dir", str(squall_home), env={"SQUALL_TOKEN": TOKEN})
    try:
        second = run_cli("serve", "--port", str(second_port), "--state-dir", str(squall_home), env={"SQUALL_TOKEN": TOKEN})
        assert httpx.get(f"http://127.0.0.1:{first_port}/healthz").status_code == 200, "the first one serves on"
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=60)
    assert second.returncode == 2, second.stderr
    message = second.stdout + second.stderr
    assert str(squall_home) in message and f"pid {first.pid}" in message and f"127.0.0.1:{first_port}" in message
    assert "Traceback" not in message


def test_the_dashboard_cookie_is_http_only_and_same_site_and_the_token_is_blanked_in_the_access_log(squall_home):
    port = free_port()
    server = serve_process(port, "--state-dir", str(squall_home), env={"SQUALL_TOKEN": TOKEN})
    try:
        link = httpx.get(f"http://127.0.0.1:{port}/?token={TOKEN}")
    finally:
        server.send_signal(signal.SIGINT)
        log, _ = server.communicate(timeout=60)
    assert link.status_code == 303
    cookie = link.headers["set-cookie"]
    attributes = {part.strip().split("=")[0].lower(): part.strip() for part in cookie.split(";")[1:]}
    assert "httponly" in attributes and attributes["samesite"].lower() == "samesite=strict", cookie
    assert TOKEN not in cookie
    assert '"GET /?token=… HTTP/1.1" 303' in log, log
    assert TOKEN not in log


def test_the_service_caps_a_ray_job_s_pool_by_the_account_wide_limit(squall_home, tmp_path):
    import ray

    ids_dataset(tmp_path / "in", 1_600, row_group_size=100)
    src = str(Path(squall.__file__).resolve().parents[1])
    tests = str(Path(__file__).resolve().parent)
    # Room for eight quarter-CPU actors: only the service's limit can keep the pool at one.
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([tests, src]), "FAULT_SLEEP": "0.3"}})
    try:
        spec = {**_steady(tmp_path / "in", tmp_path / "out", chunk_rows=100, workers=1, job_id="on-ray"),
                "backend": "ray", "ray_num_cpus": 0.25, "ray_max_workers": 4}
        with TestClient(create_app(_config(squall_home, max_concurrency=1))) as client:
            assert client.post("/jobs", json=spec, headers=AUTH).status_code == 201
            view = _wait(client.get, "on-ray", timeout=240)
        invocations = squall.api.report("on-ray", squall_home).invocations
    finally:
        ray.shutdown()
    assert (view["state"], view["rows_out"], view["workers"]) == ("SUCCEEDED", 1_600, 1)
    assert len(invocations) == 16, "sixteen chunks waited for one worker: a pool free to grow would have grown"
    assert {record.worker for record in invocations} == {0} and _most_at_once(squall_home) == 1
