"""The service's job queue on disk: every submission, so that a restart loses nothing.

Table ``submissions`` in ``service.db`` next to the job store (``squall.db``
belongs to the coordinators and is not touched here). One row per request
to run work: ``action`` is ``run`` (a new job; ``spec`` holds it), ``resume``
or ``redrive``. ``state`` is ``QUEUED`` → ``ADMITTED`` (its thread runs it)
→ ``DONE`` (the engine's store now tells how the job ended) or ``REFUSED``
(it ended before or without a result: the ``message`` says why) or
``CANCELLED`` (cancelled while queued). Rows are admitted by ``priority``
(higher first), then in the order they came (``seq``). A row left
``ADMITTED`` by a service that stopped is queued again when it restarts.

Specs and messages are stored redacted (:mod:`squall.secrets`): the service
keeps a submission's secrets in memory, never here. ``service.db`` is the
owner's alone (0600).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from squall.owner_only import private_dir, private_file
from squall.secrets import redact_json, redact_url
from squall.states import SubmissionState

_SCHEMA = """
CREATE TABLE IF NOT EXISTS submissions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    action TEXT NOT NULL,
    spec TEXT,
    priority INTEGER NOT NULL DEFAULT 0,
    source TEXT NOT NULL,
    state TEXT NOT NULL,
    submitted_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    workers INTEGER,
    message TEXT
);
CREATE INDEX IF NOT EXISTS submissions_job ON submissions (job_id, seq);
CREATE INDEX IF NOT EXISTS submissions_queue ON submissions (state, priority, seq);
"""


@dataclass(frozen=True)
class Submission:
    """One request to run work for a job (see the module docstring)."""

    seq: int
    job_id: str
    action: str
    spec: str | None
    priority: int
    source: str
    state: SubmissionState
    submitted_at: float
    started_at: float | None
    finished_at: float | None
    workers: int | None
    message: str | None


class JobQueue:
    """The ``submissions`` table; safe to call from any thread."""

    def __init__(self, state_dir: Path) -> None:
        private_dir(state_dir)
        self._db = sqlite3.connect(private_file(state_dir / "service.db"), timeout=30, isolation_level=None,
                                   check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def add(self, job_id: str, action: str, spec: str | None, priority: int, source: str) -> Submission:
        """Queue a request (its spec stored without secrets) and return it."""
        with self._lock:
            cursor = self._db.execute(
                "INSERT INTO submissions (job_id, action, spec, priority, source, state, submitted_at) "
                "VALUES (?, ?, ?, ?, ?, 'QUEUED', ?)",
                (job_id, action, redact_json(spec) if spec else spec, priority, source, time.time()),
            )
            seq = cursor.lastrowid
        found = self._one("SELECT * FROM submissions WHERE seq=?", (seq,))
        assert found is not None
        return found

    def queued(self) -> list[Submission]:
        """Requests waiting, in the order they will be admitted."""
        return self._many("SELECT * FROM submissions WHERE state='QUEUED' ORDER BY priority DESC, seq")

    def admitted(self) -> list[Submission]:
        """Requests that were running."""
        return self._many("SELECT * FROM submissions WHERE state='ADMITTED' ORDER BY seq")

    def latest(self, job_id: str) -> Submission | None:
        """The newest request for ``job_id``."""
        return self._one("SELECT * FROM submissions WHERE job_id=? ORDER BY seq DESC LIMIT 1", (job_id,))

    def latest_all(self) -> list[Submission]:
        """The newest request of every job the service was asked about, newest first."""
        return self._many(
            "SELECT * FROM submissions WHERE seq IN (SELECT MAX(seq) FROM submissions GROUP BY job_id) ORDER BY seq DESC"
        )

    def mark(self, seq: int, state: SubmissionState, message: str | None = None, workers: int | None = None) -> None:
        """Move a request to ``state`` (timestamps follow)."""
        now = time.time()
        with self._lock:
            self._db.execute(
                "UPDATE submissions SET state=?, message=COALESCE(?, message), workers=COALESCE(?, workers), "
                "started_at=CASE WHEN ?='ADMITTED' THEN ? ELSE started_at END, "
                "finished_at=CASE WHEN ? IN ('DONE', 'REFUSED', 'CANCELLED') THEN ? ELSE finished_at END WHERE seq=?",
                (state, redact_url(message) if message else message, workers, state, now, state, now, seq),
            )

    def requeue(self, seq: int, action: str) -> None:
        """Put a request left ``ADMITTED`` by a stopped service back in the queue, as ``action``."""
        with self._lock:
            self._db.execute("UPDATE submissions SET state='QUEUED', action=?, started_at=NULL WHERE seq=?", (action, seq))

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def _one(self, sql: str, args: tuple[object, ...] = ()) -> Submission | None:
        rows = self._many(sql, args)
        return rows[0] if rows else None

    def _many(self, sql: str, args: tuple[object, ...] = ()) -> list[Submission]:
        with self._lock:
            return [_submission(row) for row in self._db.execute(sql, args).fetchall()]


def _submission(row: tuple[object, ...]) -> Submission:
    seq, job_id, action, spec, priority, source, state, *rest = row
    return Submission(seq, job_id, action, spec, priority, source, SubmissionState(state), *rest)  # type: ignore[arg-type]
