"""Secrets are never stored or served: storage options, an endpoint's userinfo and database passwords stay out of the
state folder (every file, the WAL too), the manifest, the job log and every HTTP answer; state files are the owner's
alone; and a job killed midway gets its secrets back from the environment or the command line when it is resumed.

The real things: the loopback S3 server (which takes any credentials, but refuses a request that has none), the
local PostgreSQL server with a role made here with a password (the server trusts 127.0.0.1, so the password is not
checked by it; it is used anyway, to prove it never appears), the CLI and the service over real HTTP.
"""

from __future__ import annotations

import io
import json
import os
import random
import sqlite3
import stat
import subprocess
import time
from contextlib import closing
from pathlib import Path
from typing import Any, Iterator

import faultmodels
import fsspec
import httpx
import joblib
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support.cli import SQUALL, run_cli
from support.data import FEATURES, make_frame
from support.s3server import S3Server, serve
from support.service import FINAL, free_port, live_service, serve_process

from squall.secrets import MARK
from squall.service.config import ServeConfig
from squall.sql.drivers import connect
from squall.store import JobStore

ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
KEY = "AKIASQUALLKEY7QX2"
SECRET = "s3-secret-value-Zx81wq"
SESSION_TOKEN = "session-token-Pq55mv"
PG_PASSWORD = "pg-password-Qw93rt"
ENDPOINT_PASSWORD = "endpoint-password-Lk27yu"
SECRETS = (KEY, SECRET, SESSION_TOKEN, PG_PASSWORD, ENDPOINT_PASSWORD)
TOKEN = "secrets-service-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
S3_OPTIONS = {"key": KEY, "secret": SECRET, "token": SESSION_TOKEN}
NO_CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "PGPASSWORD")


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    """The loopback S3 server; unlike the object-store tests, no credentials are put in the environment."""
    yield from serve()


@pytest.fixture(autouse=True)
def no_credentials_around(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Nothing in the environment may stand in for the secrets a job is given (no ~/.pgpass either)."""
    for name in NO_CREDENTIALS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "no-pgpass"))


@pytest.fixture
def bucket(s3: S3Server) -> str:
    name = f"secrets-{random.randrange(10**9)}"
    _filesystem(s3).mkdir(name)
    return name


@pytest.fixture
def role() -> Iterator[str]:
    """A PostgreSQL role with a password, allowed to create tables and write squall's output record; dropped after."""
    name = f"squall_secret_{os.getpid()}_{random.randrange(10**6)}"
    with connect(ADMIN, autocommit=True) as connection, connection.cursor() as cursor:
        cursor.execute(f"CREATE ROLE {name} LOGIN PASSWORD '{PG_PASSWORD}'")
        cursor.execute(f"GRANT CREATE, USAGE ON SCHEMA public TO {name}")
        cursor.execute("SELECT 1 FROM pg_tables WHERE tablename = '_squall_outputs'")
        if cursor.fetchall():
            cursor.execute(f"GRANT ALL ON TABLE _squall_outputs TO {name}")
    yield name
    with connect(ADMIN, autocommit=True) as connection, connection.cursor() as cursor:
        cursor.execute(f"SELECT tablename FROM pg_tables WHERE tableowner = '{name}' AND tablename <> '_squall_outputs'")
        for (table,) in cursor.fetchall():
            cursor.execute(f'DROP TABLE "{table}"')
            cursor.execute(f"DELETE FROM _squall_outputs WHERE name = '{table}'")
        cursor.execute(f"REASSIGN OWNED BY {name} TO postgres")  # an output record table it made stays, as the server's
        cursor.execute(f"DROP OWNED BY {name}")
        cursor.execute(f"DROP ROLE {name}")


def _filesystem(s3: S3Server) -> fsspec.AbstractFileSystem:
    return fsspec.filesystem("s3", endpoint_url=s3.endpoint, skip_instance_cache=True, use_listings_cache=False,
                             **S3_OPTIONS)


def _database(role: str, password: str = PG_PASSWORD) -> str:
    return f"postgresql://{role}:{password}@127.0.0.1:5432/test"


def _upload(fs: fsspec.AbstractFileSystem, frame: pd.DataFrame, path: str, row_group_size: int) -> None:
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), buffer, row_group_size=row_group_size)
    fs.pipe_file(path, buffer.getvalue())


def _load_table(role: str, table: str, frame: pd.DataFrame) -> None:
    with connect(ADMIN) as connection, connection.cursor() as cursor:
        cursor.adbc_ingest(table, pa.Table.from_pandas(frame, preserve_index=False), mode="create")
        cursor.execute(f"ALTER TABLE {table} OWNER TO {role}")
        connection.commit()


def _read_table(query: str) -> pd.DataFrame:
    with connect(ADMIN) as connection, connection.cursor() as cursor:
        cursor.execute(query)
        return cursor.fetch_arrow_table().to_pandas()


def _model_proba(model_path: Path, frame: pd.DataFrame) -> pd.DataFrame:
    model = joblib.load(model_path)
    proba = model.predict_proba(frame[FEATURES])
    want = pd.DataFrame({f"prediction_{c}": proba[:, i] for i, c in enumerate(model.classes_)}, index=frame["id"])
    return want.sort_index()


def _found(blob: bytes | str) -> list[str]:
    """The secrets ``blob`` holds."""
    data = blob.encode() if isinstance(blob, str) else blob
    return [secret for secret in SECRETS if secret.encode() in data]


def assert_state_holds_no_secret(home: Path, open_store: bool) -> None:
    """No file under the state folder (databases, their WAL and SHM, logs, locks) holds any secret; with
    ``open_store`` (a process has the store open, or was killed with it open) its WAL is among them."""
    files = [path for path in home.rglob("*") if path.is_file()]
    assert not open_store or home / "squall.db-wal" in files, "the WAL is there to be searched"
    leaks = {str(path.relative_to(home)): _found(path.read_bytes()) for path in files}
    assert {path: found for path, found in leaks.items() if found} == {}


def assert_owner_only(home: Path) -> None:
    """The state folder and every folder in it are 0700, every file 0600 (call it while the store is open: its WAL
    and SHM files are checked too)."""
    modes = {str(path.relative_to(home.parent)): stat.S_IMODE(path.stat().st_mode) for path in [home, *home.rglob("*")]}
    wrong = {path: oct(mode) for path, mode in modes.items()
             if mode != (0o700 if (home.parent / path).is_dir() else 0o600)}
    assert wrong == {}
    assert {"state/squall.db", "state/squall.db-wal", "state/squall.db-shm", "state/locks"} <= set(modes)


def _wait(client: httpx.Client, job_id: str, timeout_s: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        view = client.get(f"/jobs/{job_id}", headers=AUTH).json()
        if view["state"] in FINAL:
            return dict(view)
        assert time.monotonic() < deadline, f"job {job_id} still {view['state']} after {timeout_s} s"
        time.sleep(0.2)


def _every_answer(url: str, job_ids: list[str]) -> dict[str, str]:
    """Every route's answer about the jobs, with the bearer token and with the dashboard's read-only cookie."""
    paths = ["/", "/jobs", "/metrics", "/openapi.json"]
    for job_id in job_ids:
        paths += [f"/jobs/{job_id}{suffix}" for suffix in ("", "/chunks", "/dlq", "/report", "/report?format=html", "/timeline")]
    answers = {}
    with httpx.Client(base_url=url, timeout=60) as bearer, httpx.Client(base_url=url, timeout=60, follow_redirects=True) as browser:
        assert browser.get(f"/?token={TOKEN}").status_code == 200  # follows the redirect, keeps the cookie
        for path in paths:
            for how, client, headers in (("bearer", bearer, AUTH), ("cookie", browser, {})):
                answer = client.get(path, headers=headers)
                assert answer.status_code == 200, (how, path, answer.text)
                answers[f"{how} {path}"] = answer.text
    return answers


def test_no_secret_reaches_the_state_folder_the_manifest_the_log_or_any_http_answer(
    squall_home, tmp_path, s3, bucket, role, linear_model
):
    fs = _filesystem(s3)
    frame_a, frame_b = make_frame(2_000, seed=1), make_frame(1_500, seed=2, start=10_000)
    _upload(fs, frame_a, f"{bucket}/in/data.parquet", row_group_size=500)
    input_table, output_table = f"rows_{role}", f"preds_{role}"
    _load_table(role, input_table, frame_b)
    userinfo_endpoint = s3.endpoint.replace("http://", f"http://squall:{ENDPOINT_PASSWORD}@")
    # Secret storage options in, a table with a password out; then a query with a password in, and out to S3
    # through an endpoint with userinfo (unsigned requests: S3 clients cannot sign and send userinfo at once).
    to_table = {"model": str(linear_model), "input": [f"s3://{bucket}/in/"], "output": _database(role), "table": output_table,
                "storage_options": S3_OPTIONS, "endpoint_url": s3.endpoint, "key": ["id"], "features": FEATURES,
                "method": "predict_proba", "chunk_rows": 500, "workers": 2}
    from_query = {"model": str(linear_model), "input": [_database(role)], "query": f"SELECT * FROM {input_table}",
                  "partition_column": "id", "output": f"s3://{bucket}/out-b", "storage_options": {"anon": True},
                  "endpoint_url": userinfo_endpoint, "key": ["id"], "features": FEATURES, "method": "predict_proba",
                  "chunk_rows": 500, "workers": 2}
    config = ServeConfig(state_dir=str(squall_home), token=TOKEN, max_concurrency=2, max_running_jobs=1)
    watching = JobStore(squall_home)  # open throughout, so that SQLite keeps the WAL file, to be searched too
    with live_service(config) as (url, _):
        with httpx.Client(base_url=url, timeout=60) as client:
            ids = [client.post("/jobs", json=spec, headers=AUTH).json()["id"] for spec in (to_table, from_query)]
            views = [_wait(client, job_id) for job_id in ids]
            chunks = client.get(f"/jobs/{ids[1]}/chunks", headers=AUTH).json()
        answers = _every_answer(url, ids)
        assert_state_holds_no_secret(squall_home, open_store=True)
        assert_owner_only(squall_home)
        assert (squall_home / "service.db-wal").exists()
    watching.close()
    assert [(v["state"], v["rows_out"]) for v in views] == [("SUCCEEDED", 2_000), ("SUCCEEDED", 1_500)], views
    assert {where: _found(text) for where, text in answers.items() if _found(text)} == {}
    assert_state_holds_no_secret(squall_home, open_store=False)
    assert (squall_home / "jobs" / ids[0] / "squall.log").stat().st_size > 0

    # Where values are shown, their redacted forms are.
    shown_database = f"postgresql://{role}:{MARK}@127.0.0.1:5432/test"
    assert views[0]["output"] == f"{shown_database}#{output_table}" and views[1]["input"] == [shown_database]
    assert {piece["uri"] for chunk in chunks for piece in chunk["pieces"]} == {shown_database}
    table_manifest = _read_table(f"SELECT manifest FROM _squall_outputs WHERE name = '{output_table}'")["manifest"][0]
    s3_manifest = fs.cat_file(f"{bucket}/out-b/_manifest.json").decode()
    assert _found(table_manifest) == [] and _found(s3_manifest) == []
    assert json.loads(table_manifest)["spec"]["storage_options"] == {"key": MARK, "secret": MARK, "token": MARK}
    assert json.loads(s3_manifest)["spec"]["endpoint_url"] == s3.endpoint.replace("http://", f"http://squall:{MARK}@")

    # The jobs ran with their secrets: what they wrote is the model's own predictions.
    got_a = _read_table(f"SELECT * FROM {output_table}").set_index("id").sort_index()
    want_a = _model_proba(linear_model, frame_a)
    np.testing.assert_allclose(got_a[list(want_a.columns)].to_numpy(), want_a.to_numpy(), rtol=1e-9)
    assert got_a.index.equals(want_a.index)
    parts = sorted(p for p in fs.ls(f"{bucket}/out-b", detail=False) if p.rsplit("/", 1)[-1].startswith("part-"))
    got_b = pd.concat([pd.read_parquet(io.BytesIO(fs.cat_file(p))) for p in parts]).set_index("id").sort_index()
    want_b = _model_proba(linear_model, frame_b)
    assert got_b.index.equals(want_b.index)
    np.testing.assert_allclose(got_b[list(want_b.columns)].to_numpy(), want_b.to_numpy(), rtol=1e-9)


def _chunk_states(home: Path, job_id: str) -> tuple[dict[str, int], int]:
    """The job's chunks by state, and how many attempts were made, read from the store as the coordinator wrote it."""
    with closing(sqlite3.connect(f"file:{home / 'squall.db'}?mode=ro", uri=True)) as db:
        states = dict(db.execute("SELECT state, COUNT(*) FROM chunks WHERE job_id=? GROUP BY state", (job_id,)).fetchall())
        attempts = db.execute("SELECT COUNT(*) FROM attempts WHERE job_id=?", (job_id,)).fetchone()[0]
    return states, attempts


def _kill_mid_job(home: Path, process: subprocess.Popen[str], job_id: str) -> dict[str, int]:
    """SIGKILL the coordinator once chunks are committed and others are in flight; returns the chunk states then."""
    deadline = time.monotonic() + 180
    while True:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the job never had chunks done and in flight at once"
        try:
            states, _ = _chunk_states(home, job_id)
        except sqlite3.OperationalError:  # the store is not made yet
            states = {}
        if states.get("done", 0) >= 2 and states.get("leased", 0) >= 1:
            process.kill()
            process.wait()
            return states
        time.sleep(0.05)


@pytest.mark.parametrize("given_by", ["command line", "environment"])
def test_a_killed_job_is_resumed_with_its_secrets_given_again_and_refused_before_any_work_without_them(
    squall_home, tmp_path, s3, bucket, role, monkeypatch, given_by
):
    fs = _filesystem(s3)
    frame = make_frame(2_000, seed=5)
    frame["id_copy"] = frame["id"]
    _upload(fs, frame[["id", "id_copy"]], f"{bucket}/in/ids.parquet", row_group_size=100)
    table, job_id = f"preds_{role}", "kill-me"
    monkeypatch.setenv("FAULT_SLEEP", "0.2")
    run = subprocess.Popen(
        [*SQUALL, "run", "--model", "faultmodels:steady", "--input", f"s3://{bucket}/in/", "--output", _database(role),
         "--table", table, "--key", "id", "--features", "id_copy", "--storage-options", json.dumps(S3_OPTIONS),
         "--endpoint-url", s3.endpoint, "--workers", "1", "--chunk-rows", "100", "--job-id", job_id, "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    at_kill = _kill_mid_job(squall_home, run, job_id)
    assert at_kill.get("leased", 0) >= 1 and at_kill.get("pending", 0) >= 1
    assert_state_holds_no_secret(squall_home, open_store=True)  # killed with the store open: its WAL is left
    assert_owner_only(squall_home)

    monkeypatch.setenv("FAULT_SLEEP", "0")
    before = _chunk_states(squall_home, job_id)
    refused = run_cli("resume", job_id, "-q")
    assert refused.returncode == 2, refused.stderr
    for named in ("`storage_options.key`", "`storage_options.secret`", "`storage_options.token`", "password in `output`"):
        assert named in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr and _found(refused.stderr) == []
    assert _chunk_states(squall_home, job_id) == before, "refused before any work: no lease released, no attempt made"

    if given_by == "command line":
        pgpass = tmp_path / "pgpass"
        pgpass.write_text(f"127.0.0.1:5432:test:{role}:{PG_PASSWORD}\n")
        pgpass.chmod(0o600)
        resumed = run_cli("resume", job_id, "--storage-options", json.dumps(S3_OPTIONS), "-q",
                          env={"PGPASSFILE": str(pgpass)})
    else:
        resumed = run_cli("resume", job_id, "-q", env={"AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET,
                                                         "AWS_SESSION_TOKEN": SESSION_TOKEN, "PGPASSWORD": PG_PASSWORD})
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.startswith("SUCCEEDED 2000 rows"), resumed.stdout
    got = _read_table(f"SELECT id, prediction FROM {table}").sort_values("id").reset_index(drop=True)
    assert got["id"].tolist() == frame["id"].tolist(), "every row exactly once"
    np.testing.assert_array_equal(got["prediction"].to_numpy(), faultmodels.steady(frame))
    assert_state_holds_no_secret(squall_home, open_store=False)


@pytest.mark.parametrize("restarted_with", ["credentials in its environment", "no credentials"])
def test_a_job_queued_in_a_killed_service_gets_its_secrets_from_the_environment_or_fails_naming_them(
    squall_home, tmp_path, s3, bucket, restarted_with
):
    fs = _filesystem(s3)
    frame = make_frame(500, seed=7)
    frame["id_copy"] = frame["id"]
    _upload(fs, frame[["id", "id_copy"]], f"{bucket}/in/ids.parquet", row_group_size=100)
    local = tmp_path / "local-in"
    local.mkdir()
    pq.write_table(pa.Table.from_pandas(frame[["id", "id_copy"]], preserve_index=False), local / "ids.parquet",
                   row_group_size=100)
    base = {"model": "faultmodels:steady", "key": ["id"], "features": ["id_copy"], "chunk_rows": 100, "workers": 1}
    busy = {**base, "input": [str(local)], "output": str(tmp_path / "busy-out"), "job_id": "busy"}
    queued = {**base, "input": [f"s3://{bucket}/in/"], "output": str(tmp_path / "s3-out"), "storage_options": S3_OPTIONS,
              "endpoint_url": s3.endpoint, "job_id": "queued"}
    config = tmp_path / "squall-serve.toml"
    config.write_text(f'state_dir = "{squall_home}"\nmax_concurrency = 1\nmax_running_jobs = 1\n')
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = serve_process(port, "--config", str(config), env={"SQUALL_TOKEN": TOKEN, "FAULT_SLEEP": "0.5"})
    try:
        assert [httpx.post(f"{url}/jobs", json=spec, headers=AUTH).status_code for spec in (busy, queued)] == [201, 201]
        assert httpx.get(f"{url}/jobs/queued", headers=AUTH).json()["state"] == "QUEUED"
        assert_state_holds_no_secret(squall_home, open_store=False)  # service.db holds the queued spec, redacted
    finally:
        server.kill()  # SIGKILL: the secrets kept in the service's memory are gone
        server.communicate()
    environment = {"SQUALL_TOKEN": TOKEN}
    if restarted_with == "credentials in its environment":
        environment.update(AWS_ACCESS_KEY_ID=KEY, AWS_SECRET_ACCESS_KEY=SECRET, AWS_SESSION_TOKEN=SESSION_TOKEN)
    server = serve_process(port, "--config", str(config), env=environment)
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            views = {job_id: _wait(client, job_id) for job_id in ("busy", "queued")}
    finally:
        server.kill()
        server.communicate()
    assert (views["busy"]["state"], views["busy"]["rows_out"]) == ("SUCCEEDED", 500)
    if restarted_with == "no credentials":
        assert views["queued"]["state"] == "FAILED"
        for named in ("`storage_options.key`", "`storage_options.secret`", "`storage_options.token`"):
            assert named in views["queued"]["message"]
        assert not (tmp_path / "s3-out").exists()
    else:
        assert (views["queued"]["state"], views["queued"]["rows_out"]) == ("SUCCEEDED", 500)
        out = pd.read_parquet(tmp_path / "s3-out").sort_values("id")
        assert out["id"].tolist() == frame["id"].tolist()
        np.testing.assert_array_equal(out["prediction"].to_numpy(), faultmodels.steady(frame))
    assert_state_holds_no_secret(squall_home, open_store=False)
