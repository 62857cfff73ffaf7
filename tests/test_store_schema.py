"""A job store made by the previous squall (schema 3) opens in this one, keeps its jobs, and records cold starts from then on."""

from __future__ import annotations

import json
import sqlite3

from squall.plan.chunk import Chunk, Piece
from squall.store import SCHEMA_VERSION, JobStore

SCHEMA_3 = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    task TEXT NOT NULL,
    output TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    chunks_total INTEGER NOT NULL DEFAULT 0,
    est_rows INTEGER NOT NULL DEFAULT 0,
    cold_starts INTEGER NOT NULL DEFAULT 0,
    worker_starts INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    ledger TEXT,
    message TEXT
);
CREATE TABLE IF NOT EXISTS chunks (
    job_id TEXT NOT NULL,
    chunk_id INTEGER NOT NULL,
    descriptor TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    attempt_base INTEGER NOT NULL DEFAULT 0,
    kills INTEGER NOT NULL DEFAULT 0,
    lane TEXT NOT NULL DEFAULT 'function',
    kind TEXT NOT NULL DEFAULT 'data',
    errors_superseded INTEGER NOT NULL DEFAULT 0,
    parent INTEGER,
    not_before REAL NOT NULL DEFAULT 0,
    worker INTEGER,
    rows_in INTEGER NOT NULL DEFAULT 0,
    rows_out INTEGER NOT NULL DEFAULT 0,
    error_rows INTEGER NOT NULL DEFAULT 0,
    part TEXT,
    error_part TEXT,
    finished_at REAL,
    PRIMARY KEY (job_id, chunk_id)
);
CREATE INDEX IF NOT EXISTS chunks_queue ON chunks (job_id, state, chunk_id);
CREATE TABLE IF NOT EXISTS attempts (
    job_id TEXT NOT NULL,
    chunk_id INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    worker INTEGER,
    started_at REAL NOT NULL,
    finished_at REAL,
    outcome TEXT,
    error TEXT,
    report TEXT,
    PRIMARY KEY (job_id, chunk_id, attempt)
);
"""
"""The store schema squall wrote as version 3, frozen as it was released (src/squall/store.py before 5e0fdf6):
an upgrade test must build the old store as the old squall did, not from today's schema."""


def test_a_schema_3_store_is_migrated_in_place_and_its_attempts_read_as_invocations(tmp_path):
    db = sqlite3.connect(tmp_path / "squall.db")
    db.executescript(SCHEMA_3)
    db.execute("INSERT INTO meta VALUES ('schema_version', '3')")
    db.execute("INSERT INTO jobs (job_id, spec, task, output, state, created_at) VALUES ('old', '{}', '{}', '/o', 'SUCCEEDED', 1.0)")
    report = {"job_id": "old", "chunk_id": 0, "attempt": 1, "worker": 1, "outcome": "ok", "rows_in": 10, "rows_out": 10,
              "started_at": 5.0, "duration_s": 0.25, "max_rss_mb": 100.0}
    db.execute("INSERT INTO attempts VALUES ('old', 0, 1, 1, 5.0, 5.3, 'ok', NULL, ?)", (json.dumps(report),))
    db.execute("INSERT INTO attempts VALUES ('old', 1, 1, 0, 5.0, 7.0, 'split', 'timeout: too slow', NULL)")
    db.commit()
    db.close()

    store = JobStore(tmp_path)
    try:
        assert store.job("old").state == "SUCCEEDED"
        records = {r.chunk_id: r for r in store.invocations("old")}
        assert (records[0].outcome, records[0].duration_s, records[0].max_rss_mb, records[0].init_s) == ("ok", 0.25, 100.0, None)
        assert (records[1].outcome, records[1].duration_s, records[1].max_rss_mb) == ("timeout", 2.0, None)
        store.create_job("new", "{}", "{}", "/n", [Chunk("new", 0, "parquet", (Piece("f", "rowgroups", 0, 1),), 10, 100)])
        claim = store.claim("new", worker=0, init_s=1.5)
        assert claim is not None
        store.fail("new", 0, claim.attempt, "error", "boom", retry_at=None)
        assert [r.init_s for r in store.invocations("new")] == [1.5], "a cold start after the upgrade is recorded"
    finally:
        store.close()
    version = sqlite3.connect(tmp_path / "squall.db").execute("SELECT value FROM meta WHERE name='schema_version'").fetchone()
    assert version == (str(SCHEMA_VERSION),) == ("6",)


def test_a_job_is_recorded_with_its_chunks_or_not_at_all(tmp_path):
    def chunks_cut_short():
        yield Chunk("cut", 0, "parquet", (Piece("f", "rowgroups", 0, 1),), 10, 100)
        raise KeyboardInterrupt  # the process is stopped while the job is being recorded

    store = JobStore(tmp_path)
    try:
        try:
            store.create_job("cut", "{}", "{}", "/out", chunks_cut_short())
        except KeyboardInterrupt:
            pass
        assert not store.has_job("cut"), "a job without its chunks would resume as an empty success"
        store.create_job("cut", "{}", "{}", "/out", [Chunk("cut", i, "parquet", (Piece("f", "rowgroups", i, i + 1),), 10, 100) for i in range(3)])
        assert store.counts("cut").count("pending") == 3 and store.job("cut").est_rows == 30
    finally:
        store.close()
