"""Finalize a job: reconcile the row counts, decide the final state, write ``_manifest.json`` and ``_SUCCESS``.

States: ``SUCCEEDED`` (every row predicted), ``PARTIAL`` (some error rows or
dead chunks, within ``max_error_rate`` and ``max_dead_chunks``), ``FAILED``
(past those limits, or the counts do not reconcile). ``_SUCCESS`` is
written for SUCCEEDED and PARTIAL: the output is final and every row is
accounted for in the parts, ``_errors/`` or the dead-chunk list.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from squall.coordinator import JobLimits, JobResult
from squall.io.commit import OutputDir
from squall.store import JobStore

MANIFEST_VERSION = 1


@dataclass(frozen=True)
class Tally:
    """The row counts that must reconcile: read = written + errors (+ rows of dead chunks, estimated)."""

    rows_in: int
    rows_out: int
    error_rows: int
    dead_chunks: int
    dead_rows_est: int

    @property
    def reconciled(self) -> bool:
        return self.rows_in == self.rows_out + self.error_rows


def finalize_job(store: JobStore, job_id: str, limits: JobLimits, invocations: int) -> JobResult:
    """Decide the job's final state from the store, write the manifest, and return the result."""
    job = store.job(job_id)
    done = store.done_chunks(job_id)
    dead = store.chunks_in_state(job_id, "dead")
    tally = Tally(
        rows_in=sum(row[1] for row in done),
        rows_out=sum(row[2] for row in done),
        error_rows=sum(row[3] for row in done),
        dead_chunks=len(dead),
        dead_rows_est=sum(chunk.est_rows for chunk in dead),
    )
    state, message = _decide(tally, limits)
    output = OutputDir(job.output)
    output.clear_attempts()
    finished = time.time()
    started = job.started_at or job.created_at
    manifest = _manifest(store, job_id, job.spec, state, message, tally, done, dead, started, finished)
    output.finalize(manifest, success=state in ("SUCCEEDED", "PARTIAL"))
    store.set_job_state(job_id, state, message)
    return JobResult(
        job_id=job_id,
        state=state,
        output=job.output,
        rows_in=tally.rows_in,
        rows_out=tally.rows_out,
        error_rows=tally.error_rows,
        dead_chunks=tally.dead_chunks,
        chunks=job.chunks_total,
        parts=tuple(row[4] for row in done if row[4]),
        wall_s=finished - started,
        cold_starts=store.job(job_id).cold_starts,
        worker_starts=store.job(job_id).worker_starts,
        invocations=invocations,
        message=message,
    )


def _decide(tally: Tally, limits: JobLimits) -> tuple[str, str | None]:
    if not tally.reconciled:
        return "FAILED", (
            f"row counts do not reconcile: read {tally.rows_in}, written {tally.rows_out}, "
            f"errors {tally.error_rows}; this is a bug in squall, please report it"
        )
    seen = tally.rows_in + tally.dead_rows_est
    error_rate = tally.error_rows / seen if seen else 0.0
    if tally.dead_chunks > limits.max_dead_chunks:
        return "FAILED", (
            f"{tally.dead_chunks} chunk(s) failed every attempt (about {tally.dead_rows_est} rows; "
            f"max_dead_chunks is {limits.max_dead_chunks}); see `squall dlq`"
        )
    if error_rate > limits.max_error_rate:
        return "FAILED", (
            f"{tally.error_rows} of {seen} rows failed ({error_rate:.2%}, max_error_rate is "
            f"{limits.max_error_rate:.2%}); the rows and reasons are in _errors/"
        )
    if tally.error_rows or tally.dead_chunks:
        return "PARTIAL", f"{tally.error_rows} error rows, {tally.dead_chunks} dead chunks, within the limits"
    return "SUCCEEDED", None


def _manifest(
    store: JobStore,
    job_id: str,
    spec: dict[str, Any],
    state: str,
    message: str | None,
    tally: Tally,
    done: list[tuple[int, int, int, int, str | None, str | None]],
    dead: list[Any],
    started: float,
    finished: float,
) -> dict[str, Any]:
    return {
        "version": MANIFEST_VERSION,
        "job_id": job_id,
        "state": state,
        "message": message,
        "rows": {
            "read": tally.rows_in,
            "written": tally.rows_out,
            "errors": tally.error_rows,
            "dead_chunks": tally.dead_chunks,
            "rows_in_dead_chunks_estimated": tally.dead_rows_est,
            "reconciled": tally.reconciled,
        },
        "parts": [
            {"chunk": chunk, "path": _name(part), "rows": rows_out}
            for chunk, _, rows_out, _, part, _ in done
            if part
        ],
        "errors": [
            {"chunk": chunk, "path": _name(error_part), "rows": errors}
            for chunk, _, _, errors, _, error_part in done
            if error_part
        ],
        "dead_chunks": [
            {"chunk": chunk.chunk_id, "est_rows": chunk.est_rows, "attempts": store.attempts(job_id, chunk.chunk_id)}
            for chunk in dead
        ],
        "timings": {"started_at": started, "finished_at": finished, "wall_s": round(finished - started, 3)},
        "spec": spec,
    }


def _name(uri: str | None) -> str | None:
    """A committed file's path relative to the output directory."""
    if uri is None:
        return None
    parts = uri.rstrip("/").split("/")
    return "/".join(parts[-2:]) if parts[-2].startswith("_") else parts[-1]
