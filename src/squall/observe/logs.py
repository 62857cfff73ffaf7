"""The job log: one record per lifecycle event, and one ``REPORT`` record per invocation as a function platform prints it.

Records are JSON objects (``log_format = "json"``), one a line, or text lines
(``text``) that read like AWS Lambda's::

    2026-01-01T12:00:00.123Z REPORT job=J chunk=3 attempt=1 worker=0 outcome=ok Duration: 812.33 ms
    Billed Duration: 813 ms Memory Size: 1769 MB Max Memory Used: 312 MB Init Duration: 1500.12 ms rows=1000/1000/0

Every record has ``time``, ``level`` and ``type`` (``START``, ``WORKER``,
``REPORT``, ``RETRY``, ``DEAD``, ``FINALIZE``, ``END``) and the job id. A log file squall
creates is the owner's alone (0600), and URL passwords in it read ``***``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from squall.observe.cost import billed_ms
from squall.observe.events import JobListener
from squall.owner_only import open_private
from squall.secrets import redact_url
from squall.states import Outcome

if TYPE_CHECKING:
    from squall.result import JobResult
    from squall.invocations import InvocationRecord


def report_fields(record: InvocationRecord, memory_mb: int) -> dict[str, Any]:
    """The fields of a REPORT record: who ran what, how it ended, how long, how it is billed, memory and rows."""
    fields: dict[str, Any] = {
        "job": record.job_id, "chunk": record.chunk_id, "attempt": record.attempt, "worker": record.worker,
        "outcome": record.outcome, "started_at": record.started_at,
        "duration_ms": round(record.duration_s * 1000.0, 3),
        "billed_duration_ms": billed_ms(record.duration_s, record.init_s),
        "memory_size_mb": memory_mb,
        "max_memory_used_mb": None if record.max_rss_mb is None else round(record.max_rss_mb, 1),
    }
    if record.init_s is not None:
        fields["init_duration_ms"] = round(record.init_s * 1000.0, 3)
    fields.update(rows_in=record.rows_in, rows_out=record.rows_out, error_rows=record.error_rows)
    if record.error:
        fields["error"] = record.error
    return fields


class JobLog(JobListener):
    """Writes the job log to ``stream`` in ``log_format`` (``text`` or ``json``)."""

    def __init__(self, stream: IO[str], log_format: str, memory_mb: int, owns_stream: bool = False) -> None:
        self._stream = stream
        self._json = log_format == "json"
        self._memory_mb = memory_mb
        self._owns = owns_stream
        self._job = ""

    @classmethod
    def open(cls, destination: str | Path, log_format: str, memory_mb: int) -> JobLog:
        """A log appending to the file ``destination``, or writing to stderr for ``-``."""
        if str(destination) == "-":
            return cls(sys.stderr, log_format, memory_mb)
        path = Path(destination)
        path.parent.mkdir(parents=True, exist_ok=True)
        return cls(open_private(path, "a", encoding="utf-8"), log_format, memory_mb, owns_stream=True)

    def close(self) -> None:
        """Close the log file (a log on stderr is left open)."""
        if self._owns and not self._stream.closed:
            self._stream.close()

    def job_started(self, job_id: str, chunks_total: int, chunks_done: int, est_rows: int) -> None:
        self._job = job_id
        self._write("INFO", "START", job=job_id, chunks=chunks_total, chunks_done=chunks_done, est_rows=est_rows)

    def worker_ready(self, worker: int, init_s: float) -> None:
        self._write("INFO", "WORKER", job=self._job, worker=worker, init_duration_ms=round(init_s * 1000.0, 3))

    def invocation_closed(self, record: InvocationRecord) -> None:
        level = "INFO" if record.outcome == Outcome.OK else "WARNING"
        self._write(level, "REPORT", **report_fields(record, self._memory_mb))

    def chunk_failed(self, job_id: str, chunk_id: int, attempt: int, outcome: str, error: str, dead: bool) -> None:
        kind, level = ("DEAD", "ERROR") if dead else ("RETRY", "WARNING")
        self._write(level, kind, job=job_id, chunk=chunk_id, attempt=attempt, outcome=outcome, error=error)

    def job_finalizing(self, job_id: str) -> None:
        self._write("INFO", "FINALIZE", job=job_id)

    def job_finished(self, result: JobResult) -> None:
        fields: dict[str, Any] = {
            "job": result.job_id, "state": result.state, "rows_in": result.rows_in, "rows_out": result.rows_out,
            "error_rows": result.error_rows, "dead_chunks": result.dead_chunks, "invocations": result.invocations,
            "wall_s": round(result.wall_s, 3), "message": result.message,
        }
        if result.cost is not None:
            fields["cost"] = result.cost.to_dict()
        self._write("INFO", "END", **fields)

    def _write(self, level: str, kind: str, **fields: Any) -> None:
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
        if self._json:
            line = json.dumps({"time": stamp, "level": level, "type": kind, **fields}, default=str)
        else:
            line = f"{stamp} {level} {kind} {_text(kind, fields)}"
        self._stream.write(redact_url(line) + "\n")  # an error may quote a URL with its password
        self._stream.flush()


def _text(kind: str, fields: dict[str, Any]) -> str:
    if kind != "REPORT":
        return " ".join(f"{name}={json.dumps(value, default=str) if isinstance(value, (str, dict)) else value}"
                        for name, value in fields.items())
    used = fields["max_memory_used_mb"]
    parts = [
        f"job={fields['job']} chunk={fields['chunk']} attempt={fields['attempt']} worker={fields['worker']} "
        f"outcome={fields['outcome']}",
        f"Duration: {fields['duration_ms']:.2f} ms",
        f"Billed Duration: {fields['billed_duration_ms']} ms",
        f"Memory Size: {fields['memory_size_mb']} MB",
        f"Max Memory Used: {'-' if used is None else round(used)} MB",
    ]
    if "init_duration_ms" in fields:
        parts.append(f"Init Duration: {fields['init_duration_ms']:.2f} ms")
    parts.append(f"rows={fields['rows_in']}/{fields['rows_out']}/{fields['error_rows']}")
    if "error" in fields:
        parts.append(f"error={json.dumps(fields['error'])}")
    return " ".join(parts)
