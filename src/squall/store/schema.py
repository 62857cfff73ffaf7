"""The store's tables and their versions: the SQL that makes them, and the migrations from older stores."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from squall.errors import StoreError
from squall.owner_only import private_file

SCHEMA_VERSION = 6

_SCHEMA = """
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
    message TEXT,
    output_schema TEXT
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
    part_first_row INTEGER,
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
    init_s REAL,
    PRIMARY KEY (job_id, chunk_id, attempt)
);
"""


def open_database(state_dir: Path) -> sqlite3.Connection:
    """The store's database in ``state_dir`` (owner-only), in WAL mode, its tables made and at
    :data:`SCHEMA_VERSION` (an older store is migrated in place); raises :class:`StoreError` if it cannot be."""
    try:
        db = sqlite3.connect(private_file(state_dir / "squall.db"), timeout=30, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{state_dir / 'squall.db'}: cannot open the job store ({exc}); use another --state-dir") from exc
    _check_version(db, state_dir)
    return db


def _check_version(db: sqlite3.Connection, state_dir: Path) -> None:
    row = db.execute("SELECT value FROM meta WHERE name='schema_version'").fetchone()
    if row is None and db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]:
        row = ("1",)  # made before versions were recorded
    if row is None:
        db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
    elif int(row[0]) in (3, 4, 5):
        _migrate_from(db, int(row[0]))
    elif int(row[0]) != SCHEMA_VERSION:
        raise StoreError(
            f"the job store in {state_dir} has schema version {row[0]}; this squall reads {SCHEMA_VERSION}. "
            "Use another --state-dir (or $SQUALL_HOME), or finish its jobs with the squall that made it"
        )


def _migrate_from(db: sqlite3.Connection, version: int) -> None:
    """Bring a store of an older ``version`` up to :data:`SCHEMA_VERSION` in place, in one transaction."""
    db.execute("BEGIN IMMEDIATE")
    try:
        if version <= 3:
            _add_column(db, "attempts", "init_s", "REAL")  # v4: old attempts have no cold start recorded
        if version <= 4:
            _add_column(db, "jobs", "output_schema", "TEXT")  # v5: old jobs fix theirs with their next part
        if version <= 5:
            _add_column(db, "chunks", "part_first_row", "INTEGER")  # v6: no part of an old job is merged
        db.execute("UPDATE meta SET value=? WHERE name='schema_version'", (str(SCHEMA_VERSION),))
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _add_column(db: sqlite3.Connection, table: str, column: str, kind: str) -> None:
    if column not in {row[1] for row in db.execute(f"PRAGMA table_info({table})")}:
        db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
