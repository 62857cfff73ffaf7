"""Finalize a job: reconcile the row counts, decide the final state, write ``_manifest.json`` and ``_SUCCESS``.

States: ``SUCCEEDED`` (every row predicted), ``PARTIAL`` (some error rows or
dead chunks, within ``max_error_rate`` and ``max_dead_chunks``), ``FAILED``
(past those limits, or the counts do not reconcile). ``_SUCCESS`` is
written for SUCCEEDED and PARTIAL: the output is final and every row is
accounted for in the parts, ``_errors/`` or the dead-chunk list.

The manifest is also the output's ledger (:mod:`squall.ledger`): each part
names the run that wrote it and the input files it read. Parts an
incremental run replaced, and error parts a replay read again, are deleted
here, after every new part is committed and before the new manifest.
Parts below the job's ``min_part_bytes`` are merged first (:mod:`squall.coalesce`);
each manifest entry still names its chunk, and ``first_row`` says where its rows
begin in a merged file. The manifest holds no secret: passwords and credentials read ``***``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from squall.coalesce import coalesce
from squall.limits import JobLimits
from squall.result import JobResult
from squall.io import layout
from squall.io.output import open_output
from squall.ledger import LEDGER_VERSION, Increment
from squall.secrets import redact
from squall.store import DoneChunk, JobStore
from squall.states import ChunkState, JobState

MANIFEST_VERSION = 2


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

    @classmethod
    def of(cls, done: list[DoneChunk], dead_rows: list[int]) -> Tally:
        """Rows read as the workers reported them; rows written and error rows as the output held them when
        each chunk was committed. Replayed rows were read once, by their data chunk; superseded error rows
        no longer count."""
        return cls(
            rows_in=sum(d.rows_in for d in done if d.kind == "data"),
            rows_out=sum(d.rows_out for d in done),
            error_rows=sum(d.error_rows for d in done if not d.errors_superseded),
            dead_chunks=len(dead_rows),
            dead_rows_est=sum(dead_rows),
        )


def finalize_job(
    store: JobStore, job_id: str, limits: JobLimits, invocations: int, min_part_bytes: int = 0, part_prefix: str = ""
) -> JobResult:
    """Decide the job's final state from the store, merge its parts below ``min_part_bytes``
    (:mod:`squall.coalesce`), write the manifest, and return the result."""
    job = store.job(job_id)
    done = store.done_chunks(job_id)
    dead = store.chunks_in_state(job_id, ChunkState.DEAD)
    record = store.ledger(job_id)
    increment = Increment.from_json(record) if record else None
    tally = Tally.of(done, [chunk.est_rows for chunk in dead])
    state, message = _decide(tally, limits)
    exact = done and all(d.chunk.format == "parquet" for d in done) and not dead
    if state != JobState.FAILED and exact and tally.rows_in != job.est_rows:
        state, message = JobState.FAILED, (
            f"read {tally.rows_in} rows but the Parquet footers hold {job.est_rows}; this is a bug in squall, please report it"
        )
    output = open_output(job.output)
    for path in _replaced(done, increment):
        output.discard(layout.join(job.output, path))
    if coalesce(store, job_id, output, job.output, min_part_bytes, part_prefix):
        done = store.done_chunks(job_id)
    output.clear_attempts()  # after merging, which writes under _tmp/ too
    finished = time.time()
    started = job.started_at or job.created_at
    entries = _entries(done, increment)
    manifest: dict[str, Any] = {
        "version": MANIFEST_VERSION,
        "job_id": job_id,
        "state": state,
        "message": message,
        "rows": _rows(tally),
        **entries,
        "dead_chunks": [
            {"chunk": chunk.chunk_id, "est_rows": chunk.est_rows, "attempts": store.attempts(job_id, chunk.chunk_id)}
            for chunk in dead
        ],
        "timings": {"started_at": started, "finished_at": finished, "wall_s": round(finished - started, 3)},
        "ledger": _ledger(job_id, increment, started, finished),
        "spec": job.spec,
    }
    output.remove_unlisted({str(entry["path"]) for entry in entries["parts"] + entries["errors"]})
    output.finalize(redact(manifest), success=state.succeeded)  # the spec and URLs without secrets
    store.set_job_state(job_id, state, message)
    final = store.job(job_id)
    return JobResult(
        job_id=job_id,
        state=state,
        output=job.output,
        rows_in=tally.rows_in,
        rows_out=tally.rows_out,
        error_rows=tally.error_rows,
        dead_chunks=tally.dead_chunks,
        chunks=job.chunks_total,
        parts=tuple(dict.fromkeys(d.part for d in done if d.part)),
        wall_s=finished - started,
        cold_starts=final.cold_starts,
        worker_starts=final.worker_starts,
        invocations=invocations,
        message=message,
    )


def _decide(tally: Tally, limits: JobLimits) -> tuple[JobState, str | None]:
    if not tally.reconciled:
        return JobState.FAILED, (
            f"row counts do not reconcile: read {tally.rows_in}, written {tally.rows_out}, "
            f"errors {tally.error_rows} (written and errors as counted in the output when each chunk was committed); "
            "this is a bug in squall, please report it"
        )
    seen = tally.rows_in + tally.dead_rows_est
    error_rate = tally.error_rows / seen if seen else 0.0
    if tally.dead_chunks > limits.max_dead_chunks:
        return JobState.FAILED, (
            f"{tally.dead_chunks} chunk(s) failed every attempt (about {tally.dead_rows_est} rows; "
            f"max_dead_chunks is {limits.max_dead_chunks}); see `squall dlq`"
        )
    if error_rate > limits.max_error_rate:
        return JobState.FAILED, (
            f"{tally.error_rows} of {seen} rows failed ({error_rate:.2%}, max_error_rate is "
            f"{limits.max_error_rate:.2%}); the rows and reasons are in _errors/"
        )
    if tally.error_rows or tally.dead_chunks:
        return JobState.PARTIAL, f"{tally.error_rows} error rows, {tally.dead_chunks} dead chunks, within the limits"
    return JobState.SUCCEEDED, None


def _rows(tally: Tally) -> dict[str, Any]:
    return {
        "read": tally.rows_in,
        "written": tally.rows_out,
        "errors": tally.error_rows,
        "dead_chunks": tally.dead_chunks,
        "rows_in_dead_chunks_estimated": tally.dead_rows_est,
        "reconciled": tally.reconciled,
    }


def _entries(done: list[DoneChunk], increment: Increment | None) -> dict[str, list[dict[str, Any]]]:
    """This run's parts and error parts, after the ones kept from earlier runs."""
    made = {"run": increment.run, "model": increment.model, "spec": increment.spec} if increment else {"run": 1}
    parts = [
        {"chunk": d.chunk_id, "path": _name(d.part), "rows": d.rows_out, **_first_row(d), **made, "files": d.files}
        for d in done
        if d.part
    ]
    errors = [
        {"chunk": d.chunk_id, "path": _name(d.error_part), "rows": d.error_rows, **made, "files": d.files}
        for d in done
        if d.error_part and not d.errors_superseded
    ]
    kept_parts = increment.kept_parts if increment else []
    kept_errors = increment.kept_errors if increment else []
    return {"parts": kept_parts + parts, "errors": kept_errors + errors}


def _first_row(done: DoneChunk) -> dict[str, int]:
    """Where the chunk's rows begin in its part, when the part is a merged file several chunks share."""
    return {} if done.part_first_row is None else {"first_row": done.part_first_row}


def _replaced(done: list[DoneChunk], increment: Increment | None) -> list[str]:
    """Files to delete: earlier runs' parts of changed inputs, and error parts that were replayed."""
    superseded = [_name(d.error_part) for d in done if d.error_part and d.errors_superseded]
    return [p for p in (increment.dropped if increment else []) + superseded if p]


def _ledger(job_id: str, increment: Increment | None, started: float, finished: float) -> dict[str, Any]:
    if increment is None:
        return {"version": LEDGER_VERSION, "runs": [{"run": 1, "job_id": job_id}]}
    runs = [r for r in increment.previous_runs if r.get("job_id") != job_id]
    this = {"run": increment.run, "job_id": job_id, "started_at": started, "finished_at": finished,
            "planned": increment.reasons}
    return {"version": LEDGER_VERSION, "model": increment.model, "spec": increment.spec, "files": increment.files,
            "runs": runs + [this]}


def _name(uri: str | None) -> str | None:
    """A committed file's path relative to the output directory."""
    if uri is None:
        return None
    parts = uri.rstrip("/").split("/")
    return "/".join(parts[-2:]) if parts[-2].startswith("_") else parts[-1]
