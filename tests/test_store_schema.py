"""A job store made by the previous squall (schema 3) opens in this one, keeps its jobs, and records cold starts from then on."""

from __future__ import annotations

import json
import sqlite3

from squall import store as store_module
from squall.store import SCHEMA_VERSION, JobStore


def test_a_schema_3_store_is_migrated_in_place_and_its_attempts_read_as_invocations(tmp_path):
    old_schema = store_module._SCHEMA.replace("    init_s REAL,\n", "")
    db = sqlite3.connect(tmp_path / "squall.db")
    db.executescript(old_schema)
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
    finally:
        store.close()
    version = sqlite3.connect(tmp_path / "squall.db").execute("SELECT value FROM meta WHERE name='schema_version'").fetchone()
    assert version == (str(SCHEMA_VERSION),) == ("5",)


def test_a_job_is_recorded_with_its_chunks_or_not_at_all(tmp_path):
    from squall.plan.chunk import Chunk, Piece

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
