"""``JobStore``: the job store's one class, everything the coordinator and the readers do with it
(the tables and lease rules are in :mod:`squall.store`)."""

from __future__ import annotations

import fcntl
import json
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from squall.errors import JobNotFoundError, JobStateError, StoreError
from squall.invocations import InvocationRecord
from squall.owner_only import open_private, private_dir
from squall.plan.chunk import Chunk
from squall.runtime.task import InvocationReport
from squall.secrets import MARK, redact_json, redact_url, reveal_url
from squall.spec import default_state_dir
from squall.states import KILL_OUTCOMES, ChunkState, JobState, Outcome
from squall.store.records import ChunkCounts, Claim, DoneChunk, JobRecord, job_record
from squall.store.schema import open_database

if TYPE_CHECKING:
    from squall.io.output import (
        Committed,  # pulls in pyarrow, which the store's users need not load
    )


class JobStore:
    """The SQLite store under a state directory (see the module docstring). A context manager: ``with
    JobStore.at(state_dir) as store:`` closes it (and releases the job locks it holds) on the way out."""

    @classmethod
    def at(cls, state_dir: str | Path | None = None) -> JobStore:
        """The store in ``state_dir``, else ``$SQUALL_HOME``, else ``~/.squall``."""
        return cls(default_state_dir(str(state_dir) if state_dir else None))

    def __enter__(self) -> JobStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        private_dir(state_dir)
        self._db = open_database(state_dir)
        self._batching = False
        self._locks: dict[str, Any] = {}

    def close(self) -> None:
        """Release the job locks this store holds, and close the database."""
        for handle in self._locks.values():
            handle.close()
        self._locks.clear()
        self._db.close()

    # --- ownership -------------------------------------------------------------------------

    def lock_job(self, job_id: str) -> None:
        """Become the one coordinator of ``job_id``; raises if another process runs it."""
        lock_dir = private_dir(self.state_dir / "locks")
        handle = open_private(lock_dir / f"{job_id}.lock", "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise StoreError(f"job {job_id} is being run by another squall process; wait for it or stop it") from None
        self._locks[job_id] = handle

    def is_running(self, job_id: str) -> bool:
        """Whether some process holds the job's coordinator lock right now."""
        if job_id in self._locks:
            return True
        path = self.state_dir / "locks" / f"{job_id}.lock"
        if not path.exists():
            return False
        with open_private(path, "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
        return False

    # --- jobs ------------------------------------------------------------------------------

    def create_job(
        self, job_id: str, spec_json: str, task_json: str, output: str, chunks: Iterable[Chunk] = (), ledger: str | None = None,
        output_schema: str | None = None,
    ) -> None:
        """Record a new job in state PENDING with its chunks and ledger record, all or nothing (a job killed
        while it is created never exists without its chunks); raises if the id is taken. ``output_schema`` is
        the schema its parts must have from the start (an incremental run's, kept from the parts before it)."""
        try:
            with self._transaction():
                self._db.execute(
                    "INSERT INTO jobs (job_id, spec, task, output, state, created_at, ledger, output_schema) "
                    "VALUES (?, ?, ?, ?, 'PENDING', ?, ?, ?)",
                    (job_id, redact_json(spec_json), redact_json(task_json), redact_url(output), time.time(),
                     redact_json(ledger) if ledger else None, output_schema),
                )
                self._insert_chunks(job_id, chunks)
        except sqlite3.IntegrityError:
            raise JobStateError(f"a job named {job_id!r} already exists; pick another --job-id or `squall resume` it") from None

    def job(self, job_id: str) -> JobRecord:
        row = self._db.execute("SELECT * FROM jobs WHERE job_id=?", (job_id,)).fetchone()
        if row is None:
            raise JobNotFoundError(f"no job {job_id!r} in {self.state_dir}; `squall status` lists the jobs there")
        return job_record(row)

    def has_job(self, job_id: str) -> bool:
        return self._db.execute("SELECT 1 FROM jobs WHERE job_id=?", (job_id,)).fetchone() is not None

    def recent_jobs(self, limit: int = 20) -> list[JobRecord]:
        rows = self._db.execute("SELECT * FROM jobs ORDER BY created_at DESC LIMIT ?", (limit,)).fetchall()
        return [job_record(row) for row in rows]

    def set_job_state(self, job_id: str, state: JobState, message: str | None = None) -> None:
        now = time.time()
        finished = now if not JobState(state).active else None
        self._db.execute(
            "UPDATE jobs SET state=?, message=?, finished_at=?, "
            "started_at=CASE WHEN ?='RUNNING' AND started_at IS NULL THEN ? ELSE started_at END WHERE job_id=?",
            (state, _redacted(message), finished, state, now, job_id),
        )

    def add_starts(self, job_id: str, cold: int, workers: int) -> None:
        """Count model loads and worker process starts."""
        self._db.execute(
            "UPDATE jobs SET cold_starts=cold_starts+?, worker_starts=worker_starts+? WHERE job_id=?", (cold, workers, job_id)
        )

    # --- the queue -------------------------------------------------------------------------

    def enqueue(self, job_id: str, chunks: Iterable[Chunk]) -> int:
        """Add chunks as pending, in one transaction; returns how many."""
        with self._transaction():
            return self._insert_chunks(job_id, chunks)

    def _insert_chunks(self, job_id: str, chunks: Iterable[Chunk]) -> int:
        rows = [(job_id, c.chunk_id, redact_json(c.to_json()), c.est_rows) for c in chunks]
        self._db.executemany(
            "INSERT INTO chunks (job_id, chunk_id, descriptor, state) VALUES (?, ?, ?, 'pending')", [row[:3] for row in rows]
        )
        self._db.execute(
            "UPDATE jobs SET chunks_total=chunks_total+?, est_rows=est_rows+? WHERE job_id=?",
            (len(rows), sum(row[3] for row in rows), job_id),
        )
        return len(rows)

    def claim(self, job_id: str, worker: int, now: float | None = None, init_s: float | None = None) -> Claim | None:
        """Lease the lowest pending chunk that may run now to ``worker``; ``None`` if there is none.

        ``init_s`` is the worker's start-up time when this is its first invocation (a cold start).
        """
        now = time.time() if now is None else now
        with self._transaction():
            row = self._db.execute(
                "SELECT chunk_id, descriptor, attempts, attempt_base, kills, lane FROM chunks "
                "WHERE job_id=? AND state='pending' AND not_before<=? ORDER BY chunk_id LIMIT 1",
                (job_id, now),
            ).fetchone()
            if row is None:
                return None
            chunk_id, descriptor, attempts, base, kills, lane = row
            attempt = attempts + 1
            self._db.execute(
                "UPDATE chunks SET state='leased', attempts=?, worker=? WHERE job_id=? AND chunk_id=?",
                (attempt, worker, job_id, chunk_id),
            )
            self._db.execute(
                "INSERT OR REPLACE INTO attempts (job_id, chunk_id, attempt, worker, started_at, init_s) VALUES (?, ?, ?, ?, ?, ?)",
                (job_id, chunk_id, attempt, worker, now, init_s),
            )
        return Claim(_revealed(Chunk.from_json(descriptor)), attempt, base, kills, lane, worker)

    def complete(
        self, report: InvocationReport, part: Committed | None, error_part: Committed | None, output_schema: str | None = None
    ) -> None:
        """Mark the chunk done with its committed files and the rows counted in them when they were
        committed (not the rows the worker reported: finalize reconciles those with the rows read), and
        close the attempt. ``output_schema`` becomes the job's output schema if it has none yet."""
        with self._transaction():
            if output_schema is not None:
                self._db.execute(
                    "UPDATE jobs SET output_schema=COALESCE(output_schema, ?) WHERE job_id=?", (output_schema, report.job_id)
                )
            self._db.execute(
                "UPDATE chunks SET state='done', rows_in=?, rows_out=?, error_rows=?, part=?, error_part=?, "
                "finished_at=? WHERE job_id=? AND chunk_id=?",
                (report.rows_in, part.rows if part else 0, error_part.rows if error_part else 0,
                 _redacted(part.uri if part else None), _redacted(error_part.uri if error_part else None), time.time(),
                 report.job_id, report.chunk_id),
            )
            self._close_attempt(report.job_id, report.chunk_id, report.attempt, Outcome.OK, None, report)

    def fail(
        self,
        job_id: str,
        chunk_id: int,
        attempt: int,
        outcome: str,
        error: str,
        retry_at: float | None,
        report: InvocationReport | None = None,
    ) -> str:
        """Close a failed attempt; the chunk goes back to pending (at ``retry_at``) or, if ``None``, dead."""
        state = ChunkState.PENDING if retry_at is not None else ChunkState.DEAD
        killed = 1 if outcome in KILL_OUTCOMES else 0
        with self._transaction():
            self._db.execute(
                "UPDATE chunks SET state=?, not_before=?, worker=NULL, kills=kills+? WHERE job_id=? AND chunk_id=?",
                (state, retry_at or 0, killed, job_id, chunk_id),
            )
            self._close_attempt(job_id, chunk_id, attempt, outcome, error, report)
        return state

    def _close_attempt(
        self, job_id: str, chunk_id: int, attempt: int, outcome: str, error: str | None, report: InvocationReport | None
    ) -> None:
        self._db.execute(
            "UPDATE attempts SET finished_at=?, outcome=?, error=?, report=? WHERE job_id=? AND chunk_id=? AND attempt=?",
            (time.time(), outcome, _redacted(error), redact_json(json.dumps(report.to_dict())) if report else None,
             job_id, chunk_id, attempt),
        )

    def release_attempt(self, job_id: str, chunk_id: int, attempt: int, error: str, report: InvocationReport) -> None:
        """Close an attempt that failed through no fault of its chunk (a full disk, a part that raced another
        to fix the job's schema) as an ``error``: the chunk goes back to pending, and the attempt costs it
        nothing (no attempt, no kill counted)."""
        with self._transaction():
            self._db.execute(
                "UPDATE chunks SET state='pending', worker=NULL, not_before=0, attempt_base=attempt_base+1 "
                "WHERE job_id=? AND chunk_id=?",
                (job_id, chunk_id),
            )
            self._close_attempt(job_id, chunk_id, attempt, Outcome.ERROR, error, report)

    def split(self, job_id: str, chunk_id: int, attempt: int, error: str, children: Sequence[Chunk]) -> None:
        """Close a killed attempt and replace the chunk by ``children`` (pending), which cover the same rows."""
        with self._transaction():
            self._db.execute(
                "UPDATE chunks SET state='split', worker=NULL, kills=kills+1 WHERE job_id=? AND chunk_id=?",
                (job_id, chunk_id),
            )
            self._close_attempt(job_id, chunk_id, attempt, Outcome.SPLIT, error, None)
            self._db.executemany(
                "INSERT INTO chunks (job_id, chunk_id, descriptor, state, parent) VALUES (?, ?, ?, 'pending', ?)",
                [(job_id, c.chunk_id, redact_json(c.to_json()), chunk_id) for c in children],
            )
            self._db.execute("UPDATE jobs SET chunks_total=chunks_total+? WHERE job_id=?", (len(children) - 1, job_id))

    def to_batch_lane(self, job_id: str, chunk_id: int, attempt: int, error: str) -> None:
        """Close a killed attempt and queue the chunk again in the batch lane (no time limit)."""
        with self._transaction():
            self._db.execute(
                "UPDATE chunks SET state='pending', lane='batch', worker=NULL, not_before=0, kills=kills+1, "
                "attempt_base=attempts WHERE job_id=? AND chunk_id=?",
                (job_id, chunk_id),
            )
            self._close_attempt(job_id, chunk_id, attempt, "to-batch-lane", error, None)

    def next_chunk_id(self, job_id: str) -> int:
        row = self._db.execute("SELECT MAX(chunk_id) FROM chunks WHERE job_id=?", (job_id,)).fetchone()
        return 0 if row[0] is None else int(row[0]) + 1

    def redrive(self, job_id: str, chunk_ids: Sequence[int] | None = None) -> int:
        """Put dead chunks (all, or those named) back to pending with a fresh set of attempts; returns how many."""
        query = "UPDATE chunks SET state='pending', not_before=0, kills=0, attempt_base=attempts WHERE job_id=? AND state='dead'"
        params: list[Any] = [job_id]
        if chunk_ids is not None:
            query += f" AND chunk_id IN ({','.join('?' * len(chunk_ids))})"
            params.extend(chunk_ids)
        with self._transaction():
            return self._db.execute(query, params).rowcount

    def update_spec(self, job_id: str, spec_json: str) -> None:
        """Replace the stored spec (a redrive with new limits)."""
        self._db.execute("UPDATE jobs SET spec=? WHERE job_id=?", (redact_json(spec_json), job_id))

    def request_cancel(self, job_id: str) -> None:
        """Ask the job's coordinator, wherever it runs, to stop after committing what has finished."""
        state = self.job(job_id).state
        if not JobState(state).active:
            raise JobStateError(f"job {job_id} is {state}, not running; there is nothing to cancel")
        self._db.execute("UPDATE jobs SET cancel_requested=1 WHERE job_id=?", (job_id,))

    def cancel_requested(self, job_id: str) -> bool:
        row = self._db.execute("SELECT cancel_requested FROM jobs WHERE job_id=?", (job_id,)).fetchone()
        return bool(row and row[0])

    def clear_cancel(self, job_id: str) -> None:
        self._db.execute("UPDATE jobs SET cancel_requested=0 WHERE job_id=?", (job_id,))

    def release_leases(self, job_id: str) -> int:
        """Return every leased chunk of ``job_id`` to pending (after a coordinator died); returns how many."""
        with self._transaction():
            self._db.execute(
                "UPDATE attempts SET outcome='lost', error='the coordinator stopped', finished_at=? "
                "WHERE job_id=? AND outcome IS NULL",
                (time.time(), job_id),
            )
            cursor = self._db.execute(  # the interrupted attempt was not the chunk's fault: it costs none
                "UPDATE chunks SET state='pending', worker=NULL, not_before=0, attempt_base=attempt_base+1 "
                "WHERE job_id=? AND state='leased'",
                (job_id,),
            )
        return cursor.rowcount

    # --- reading ---------------------------------------------------------------------------

    def counts(self, job_id: str) -> ChunkCounts:
        rows = self._db.execute(
            "SELECT state, COUNT(*), SUM(rows_in), SUM(rows_out), SUM(error_rows) FROM chunks WHERE job_id=? GROUP BY state",
            (job_id,),
        ).fetchall()
        by_state = {state: count for state, count, *_ in rows}
        done = [row for row in rows if row[0] == ChunkState.DONE]
        rows_in, rows_out, errors = (int(done[0][i] or 0) for i in (2, 3, 4)) if done else (0, 0, 0)
        return ChunkCounts(by_state, rows_in, rows_out, errors)

    def done_chunks(self, job_id: str) -> list[DoneChunk]:
        """Every done chunk of ``job_id``, in order."""
        rows = self._db.execute(
            "SELECT chunk_id, rows_in, rows_out, error_rows, part, error_part, descriptor, kind, errors_superseded, "
            "part_first_row FROM chunks WHERE job_id=? AND state='done' ORDER BY chunk_id",
            (job_id,),
        ).fetchall()
        return [
            DoneChunk(cid, rin, rout, err, part, epart, Chunk.from_json(desc), kind, bool(sup), first)
            for cid, rin, rout, err, part, epart, desc, kind, sup, first in rows
        ]

    def move_parts(self, job_id: str, moves: Sequence[tuple[int, str, int]]) -> None:
        """Record, all at once, that each ``(chunk_id, part, first_row)`` chunk's rows now lie in ``part`` from
        row ``first_row`` on (small parts merged into one file)."""
        with self._transaction():
            self._db.executemany(
                "UPDATE chunks SET part=?, part_first_row=? WHERE job_id=? AND chunk_id=? AND state='done'",
                [(_redacted(part), first, job_id, chunk_id) for chunk_id, part, first in moves],
            )

    def output_schema(self, job_id: str) -> str | None:
        """The schema every part of the job is written in, once its first part is committed."""
        row = self._db.execute("SELECT output_schema FROM jobs WHERE job_id=?", (job_id,)).fetchone()
        return row[0] if row else None

    def ledger(self, job_id: str) -> str | None:
        row = self._db.execute("SELECT ledger FROM jobs WHERE job_id=?", (job_id,)).fetchone()
        return row[0] if row else None

    def add_replay(self, job_id: str, chunks: Sequence[Chunk], superseded: Sequence[int]) -> None:
        """Queue replay chunks and mark the error parts they read again as superseded, in one transaction."""
        with self._transaction():
            self._db.executemany(
                "INSERT INTO chunks (job_id, chunk_id, descriptor, state, kind) VALUES (?, ?, ?, 'pending', 'replay')",
                [(job_id, c.chunk_id, redact_json(c.to_json())) for c in chunks],
            )
            self._db.executemany(
                "UPDATE chunks SET errors_superseded=1 WHERE job_id=? AND chunk_id=?", [(job_id, c) for c in superseded]
            )
            self._db.execute("UPDATE jobs SET chunks_total=chunks_total+? WHERE job_id=?", (len(chunks), job_id))

    def chunks_in_state(self, job_id: str, state: str) -> list[Chunk]:
        rows = self._db.execute(
            "SELECT descriptor FROM chunks WHERE job_id=? AND state=? ORDER BY chunk_id", (job_id, state)
        ).fetchall()
        return [Chunk.from_json(row[0]) for row in rows]

    def attempts(self, job_id: str, chunk_id: int) -> list[dict[str, Any]]:
        cursor = self._db.execute(
            "SELECT attempt, worker, started_at, finished_at, outcome, error FROM attempts "
            "WHERE job_id=? AND chunk_id=? ORDER BY attempt",
            (job_id, chunk_id),
        )
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]

    def invocations(self, job_id: str, chunk_id: int | None = None, attempt: int | None = None) -> list[InvocationRecord]:
        """Every finished invocation of ``job_id`` (or the one named), in the order they started."""
        query = (
            "SELECT job_id, chunk_id, attempt, worker, started_at, finished_at, outcome, error, report, init_s "
            "FROM attempts WHERE job_id=? AND finished_at IS NOT NULL"
        )
        params: list[Any] = [job_id]
        if chunk_id is not None and attempt is not None:
            query += " AND chunk_id=? AND attempt=?"
            params += [chunk_id, attempt]
        rows = self._db.execute(query + " ORDER BY started_at, chunk_id, attempt", params).fetchall()
        return [InvocationRecord.from_row(*row) for row in rows]

    def next_retry_at(self, job_id: str) -> float | None:
        row = self._db.execute(
            "SELECT MIN(not_before) FROM chunks WHERE job_id=? AND state='pending'", (job_id,)
        ).fetchone()
        return row[0] if row and row[0] is not None else None

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Make every change inside one transaction, committed on the way out, an exception's way included:
        each change is whole on its own (a savepoint), so those made before the exception stand, as they
        would have one transaction each. A process killed inside loses the batch's changes, all of them."""
        if self._batching:
            yield
            return
        self._db.execute("BEGIN IMMEDIATE")
        self._batching = True
        try:
            yield
        finally:
            self._batching = False
            if self._db.in_transaction:
                self._db.execute("COMMIT")

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        if self._batching:
            with self._savepoint():
                yield
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    @contextmanager
    def _savepoint(self) -> Iterator[None]:
        self._db.execute("SAVEPOINT change")
        try:
            yield
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK TO change")
                self._db.execute("RELEASE change")
            raise
        self._db.execute("RELEASE change")


def _redacted(text: str | None) -> str | None:
    return None if text is None else redact_url(text)


def _revealed(chunk: Chunk) -> Chunk:
    """``chunk`` with its URLs' credentials given back from this process's memory, for the worker it goes to."""
    if not any(MARK in piece.uri for piece in chunk.pieces):
        return chunk
    return replace(chunk, pieces=tuple(replace(piece, uri=reveal_url(piece.uri)) for piece in chunk.pieces))
