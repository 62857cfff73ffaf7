"""The records the job store hands out: a job, a chunk's counts, a done chunk, a claim."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from squall.plan.chunk import Chunk
from squall.states import JobState


@dataclass(frozen=True)
class JobRecord:
    """A job as the store knows it."""

    job_id: str
    spec: dict[str, Any]
    task: str
    output: str
    state: JobState
    created_at: float
    started_at: float | None
    finished_at: float | None
    chunks_total: int
    est_rows: int
    cold_starts: int
    worker_starts: int
    message: str | None


@dataclass(frozen=True)
class ChunkCounts:
    """How many chunks of a job are in each state, and the rows of the finished ones."""

    by_state: dict[str, int]
    rows_in: int
    rows_out: int
    error_rows: int

    def count(self, state: str) -> int:
        return self.by_state.get(state, 0)


@dataclass(frozen=True)
class DoneChunk:
    """A committed chunk: its counts, its committed files and what it read."""

    chunk_id: int
    rows_in: int
    rows_out: int
    error_rows: int
    part: str | None
    error_part: str | None
    chunk: Chunk
    kind: str = "data"
    errors_superseded: bool = False
    part_first_row: int | None = None  # where the chunk's rows begin in ``part``, when it shares a merged file

    @property
    def files(self) -> list[str]:
        return sorted({piece.uri for piece in self.chunk.pieces})


@dataclass(frozen=True)
class Claim:
    """A chunk leased for one attempt: ``attempt`` numbers all its attempts, ``attempt - attempt_base`` those since the last redrive."""

    chunk: Chunk
    attempt: int
    attempt_base: int = 0
    kills: int = 0
    lane: str = "function"
    worker: int = -1

    @property
    def attempts_since_redrive(self) -> int:
        return self.attempt - self.attempt_base


def job_record(row: tuple[Any, ...]) -> JobRecord:
    """The record of one ``jobs`` row, read with ``SELECT *``."""
    job_id, spec, task, output, state, created, started, finished, total, est_rows, cold, workers, _, _, message = row[:15]
    return JobRecord(
        job_id, json.loads(spec), task, output, JobState(state), created, started, finished, total, est_rows, cold, workers, message
    )
