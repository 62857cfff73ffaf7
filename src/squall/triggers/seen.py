"""The seen record: what each trigger already started, durable across restarts.

Tables (SQLite, ``<state_dir>/triggers.db``)::

    seen   (rule, key, size, mtime, etag, job_id, spec, state, result, at)   PRIMARY KEY (rule, key)
    fired  (rule, run_time)                                                  PRIMARY KEY (rule)

``spec`` is stored without its secrets (:mod:`squall.secrets`); a job handed
over again after a crash gets them back from its rule's template.
``key`` is a file's URI (file arrival) or a run time (schedule). ``state`` is
``claimed`` (the job id is chosen, the job may or may not have been handed
over) or ``submitted`` (the job was handed over; ``result`` is its end state
when the runner knows it, e.g. ``squall watch``).

Exactly once
------------
1. Before a job is handed over, its row is written (``claim``) with the job's
   *deterministic* id (:func:`squall.triggers.template.job_id_for`) and the
   filled spec, in one committed transaction. A key that already has a row is
   never claimed again, so a file or run time can never start a second,
   different job.
2. The job is then handed over (``submit``), and the row set to ``submitted``.
3. A crash between 1 and 2 leaves a ``claimed`` row. On start each trigger
   hands every ``claimed`` row over again (:meth:`SeenRecord.unsubmitted`)
   with the *same* job id and spec. The receiver recognises a job id it
   already has: ``squall watch`` resumes an unfinished job with that id (or
   takes a finished one as done), the service's queue refuses a duplicate id
   (``JobStateError``), which counts as submitted.

So a key is submitted at least once (step 3) and runs at most once (one job
id per key, duplicates recognised by id): exactly once. A crash before step 1
committed loses nothing either: the file is still there (or the run still
missed) and is found again by the next listing.

A job that a crash or a stop cut short *after* it was handed over is the
receiver's to finish under the same id: ``squall watch`` resumes it
(:func:`squall.triggers.watch.run_in_process`, which also re-plans a job
killed between ``api.run``'s record of it and its chunks).
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from squall.owner_only import private_dir, private_file
from squall.secrets import redact_json

_SCHEMA = """
CREATE TABLE IF NOT EXISTS seen (
    rule TEXT NOT NULL,
    key TEXT NOT NULL,
    size INTEGER,
    mtime REAL,
    etag TEXT,
    job_id TEXT NOT NULL,
    spec TEXT NOT NULL,
    state TEXT NOT NULL,
    result TEXT,
    at REAL NOT NULL,
    PRIMARY KEY (rule, key)
);
CREATE TABLE IF NOT EXISTS fired (
    rule TEXT PRIMARY KEY,
    run_time TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class SeenEntry:
    """One key a trigger acted on, and the job it started."""

    rule: str
    key: str
    job_id: str
    spec: str
    state: str
    result: str | None


class SeenRecord:
    """The seen record of one state directory. One instance per thread (SQLite connections are not shared)."""

    def __init__(self, state_dir: Path) -> None:
        private_dir(state_dir)
        self.path = private_file(state_dir / "triggers.db")
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def known(self, rule: str) -> set[str]:
        """Every key of ``rule`` already claimed."""
        return {key for (key,) in self._db.execute("SELECT key FROM seen WHERE rule=?", (rule,))}

    def claim(self, rule: str, key: str, job_id: str, spec_json: str,
              size: int | None = None, mtime: float | None = None, etag: str | None = None) -> bool:
        """Record that ``key`` starts job ``job_id``; False (and nothing written) if ``key`` was claimed before."""
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO seen (rule, key, size, mtime, etag, job_id, spec, state, at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, 'claimed', ?)",
            (rule, key, size, mtime, etag, job_id, redact_json(spec_json), time.time()),
        )
        return cursor.rowcount == 1

    def submitted(self, rule: str, key: str, result: str | None = None) -> None:
        """The job of ``key`` was handed over (and, if known, ended in ``result``)."""
        self._db.execute("UPDATE seen SET state='submitted', result=? WHERE rule=? AND key=?", (result, rule, key))

    def unsubmitted(self, rule: str) -> list[SeenEntry]:
        """Claimed keys whose job may not have been handed over (a crash came between), oldest first."""
        return self._entries("WHERE rule=? AND state='claimed' ORDER BY at", (rule,))

    def entries(self, rule: str | None = None) -> list[SeenEntry]:
        """Every entry (of ``rule``), oldest first."""
        if rule is None:
            return self._entries("ORDER BY at", ())
        return self._entries("WHERE rule=? ORDER BY at", (rule,))

    def _entries(self, where: str, args: tuple[str, ...]) -> list[SeenEntry]:
        rows = self._db.execute(f"SELECT rule, key, job_id, spec, state, result FROM seen {where}", args)
        return [SeenEntry(*row) for row in rows]

    def last_fired(self, rule: str) -> datetime | None:
        """The newest run time ``rule`` fired (or its baseline, see :meth:`set_fired`)."""
        row = self._db.execute("SELECT run_time FROM fired WHERE rule=?", (rule,)).fetchone()
        return datetime.fromisoformat(row[0]) if row else None

    def set_fired(self, rule: str, run_time: datetime) -> None:
        """Remember ``run_time`` as the newest time ``rule`` fired (stored in UTC)."""
        text = run_time.astimezone(timezone.utc).isoformat()
        self._db.execute(
            "INSERT INTO fired (rule, run_time) VALUES (?, ?) ON CONFLICT (rule) DO UPDATE SET run_time=excluded.run_time",
            (rule, text),
        )

    def claim_run(self, rule: str, run_time: datetime, job_id: str, spec_json: str) -> bool:
        """Claim a schedule's run and move its fired time, in one transaction."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            claimed = self.claim(rule, run_time.astimezone(timezone.utc).isoformat(), job_id, spec_json)
            self.set_fired(rule, run_time)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return claimed
