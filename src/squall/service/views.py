"""What the API answers about jobs: the engine's store, with the service's queue for jobs not started yet.

A job submitted to the service is visible from the moment it is queued: until
its coordinator creates it in the store, its view comes from the queue
(``QUEUED``, ``STARTING``, or ``FAILED`` with the reason it could not start).
Jobs run by the CLI against the same state directory are shown too.
"""

from __future__ import annotations

import json
from typing import Any

from squall.errors import JobNotFoundError
from squall.service.queue import Submission
from squall.service.scheduler import Scheduler
from squall.store import JobRecord, JobStore
from squall.states import ChunkState, JobState, SubmissionState
from squall.job_status import JobStatus

_QUEUE_STATES = {SubmissionState.QUEUED: "QUEUED", SubmissionState.ADMITTED: "STARTING", SubmissionState.REFUSED: "FAILED",
                 SubmissionState.CANCELLED: "CANCELLED"}


class JobViews:
    """Builds the JSON views of jobs for the routes."""

    def __init__(self, scheduler: Scheduler) -> None:
        self._scheduler = scheduler

    def job(self, job_id: str) -> dict[str, Any]:
        """One job's state, counts, rows/s and ETA; raises :class:`JobNotFoundError` for an unknown id."""
        positions = self._scheduler.queue_positions()
        with self._store() as store:
            submission = self._scheduler.queue.latest(job_id)
            record = store.job(job_id) if store.has_job(job_id) else None
            if record is None and submission is None:
                raise JobNotFoundError(f"no job {job_id!r} in this service; list jobs with GET /jobs")
            return self._view(store, job_id, record, submission, positions)

    def jobs(self, state: str | None, limit: int, offset: int) -> dict[str, Any]:
        """Jobs newest first, optionally only those in ``state``, one page of them."""
        positions = self._scheduler.queue_positions()
        with self._store() as store:
            submissions = {s.job_id: s for s in self._scheduler.queue.latest_all()}
            records = {r.job_id: r for r in store.recent_jobs(1_000_000)}
            ids = sorted(set(submissions) | set(records), key=lambda i: -_created(records.get(i), submissions.get(i)))
            views = [self._view(store, i, records.get(i), submissions.get(i), positions) for i in ids]
        if state:
            views = [v for v in views if v["state"] == state.upper()]
        return {"total": len(views), "offset": offset, "limit": limit, "jobs": views[offset:offset + limit]}

    def chunks(self, job_id: str) -> list[dict[str, Any]]:
        """Every chunk of a job: id, state, estimated rows and, when done, its counts and part."""
        with self._store() as store:
            self._require(store, job_id)
            done = {d.chunk_id: d for d in store.done_chunks(job_id)}
            found = []
            for state in ChunkState:
                for chunk in store.chunks_in_state(job_id, state):
                    entry: dict[str, Any] = {"chunk_id": chunk.chunk_id, "state": state, "est_rows": chunk.est_rows,
                                             "pieces": [dict(p.__dict__) for p in chunk.pieces]}
                    if chunk.chunk_id in done:
                        d = done[chunk.chunk_id]
                        entry.update(rows_in=d.rows_in, rows_out=d.rows_out, error_rows=d.error_rows, part=d.part)
                    found.append(entry)
            return sorted(found, key=lambda c: c["chunk_id"])

    def require(self, job_id: str) -> None:
        """Raise :class:`JobNotFoundError` unless the engine's store has ``job_id``."""
        with self._store() as store:
            self._require(store, job_id)

    def _require(self, store: JobStore, job_id: str) -> None:
        if not store.has_job(job_id):
            if self._scheduler.queue.latest(job_id) is not None:
                raise JobNotFoundError(f"job {job_id} has not started yet; its chunks and report appear once it runs")
            raise JobNotFoundError(f"no job {job_id!r} in this service; list jobs with GET /jobs")

    def _store(self) -> JobStore:
        return JobStore(self._scheduler.state_dir)

    def _view(
        self, store: JobStore, job_id: str, record: JobRecord | None, submission: Submission | None,
        positions: dict[str, int],
    ) -> dict[str, Any]:
        view: dict[str, Any] = {"id": job_id, "source": submission.source if submission else "cli",
                                "priority": submission.priority if submission else 0,
                                "workers": submission.workers if submission else None}
        waiting = submission is not None and submission.state in (SubmissionState.QUEUED, SubmissionState.ADMITTED)
        if record is None:
            assert submission is not None
            spec = _spec_fields(submission.spec)
            view.update(job_id=job_id, state=_QUEUE_STATES[submission.state], message=submission.message,
                        created_at=submission.submitted_at, started_at=None, finished_at=submission.finished_at,
                        model=spec.get("model"), input=spec.get("input"), output=spec.get("output"),
                        chunks_total=0, chunks={}, est_rows=0, rows_in=0, rows_out=0, error_rows=0,
                        rows_per_s=0.0, eta_s=None, progress=0.0)
        else:
            view.update(self._engine_view(store, record))
            if waiting and not JobState(record.state).active and submission is not None:
                view["state"] = _QUEUE_STATES[submission.state]  # a resume or redrive waiting for workers
        view["queue_position"] = positions.get(job_id)
        return view

    def _engine_view(self, store: JobStore, record: JobRecord) -> dict[str, Any]:
        """The job's status in the one shape the CLI's ``--json`` also prints."""
        return JobStatus(record, store.counts(record.job_id)).to_dict()


def _spec_fields(text: str | None) -> dict[str, Any]:
    """The queued spec's fields, or none if it cannot be read (its request is then FAILED with the reason)."""
    try:
        found = json.loads(text) if text else {}
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def _created(record: JobRecord | None, submission: Submission | None) -> float:
    if submission is not None:
        return submission.submitted_at
    assert record is not None
    return record.created_at
