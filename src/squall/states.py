"""The states a job, a chunk and an invocation can be in, by name.

Each is a string enum: a member equals its value (``JobState.FAILED ==
"FAILED"``), prints as it (``f"{JobState.FAILED}"`` is ``FAILED``) and is
stored and served as that text. The store's module docstring gives the rules
that move a chunk from one state to the next.
"""

from __future__ import annotations

from enum import Enum


class _Named(str, Enum):
    """A member is its text: in comparisons, in f-strings, in JSON."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class JobState(_Named):
    """Where a job stands. ``PENDING`` and ``RUNNING`` are active; the others are how a run ended."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    PARTIAL = "PARTIAL"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def active(self) -> bool:
        """Whether the job has not ended (its coordinator may be running it)."""
        return self in ACTIVE_STATES

    @property
    def succeeded(self) -> bool:
        """Whether the output is final: every row is a prediction, an error row or in a dead chunk within the limits
        (``_SUCCESS`` is written, and the CLI exits 0)."""
        return self in (JobState.SUCCEEDED, JobState.PARTIAL)


ACTIVE_STATES = (JobState.PENDING, JobState.RUNNING)


class ChunkState(_Named):
    """Where a chunk is in the queue: ``pending`` → ``leased`` → ``done`` | back to ``pending`` (a retry) |
    ``dead`` (attempts exhausted) | ``split`` (replaced by two children that cover its rows)."""

    PENDING = "pending"
    LEASED = "leased"
    DONE = "done"
    DEAD = "dead"
    SPLIT = "split"


class Outcome(_Named):
    """How one invocation (an attempt) ended: ``ok``; ``error`` (it reported a failure); ``timeout``, ``memory``
    and ``lost`` (its worker was killed or died: the kills, which decide splitting); ``split`` and
    ``to-batch-lane`` (a kill that replaced the chunk or moved it to the batch lane)."""

    OK = "ok"
    ERROR = "error"
    TIMEOUT = "timeout"
    MEMORY = "memory"
    LOST = "lost"
    SPLIT = "split"
    TO_BATCH_LANE = "to-batch-lane"


KILL_OUTCOMES = (Outcome.TIMEOUT, Outcome.MEMORY, Outcome.LOST)


class SubmissionState(_Named):
    """Where a request to the service (run, resume, redrive) stands in its queue: ``QUEUED`` → ``ADMITTED``
    (its workers granted) → ``DONE`` (the engine ran it; the job's own state says how it ended), or
    ``REFUSED`` (it could not start) or ``CANCELLED`` (while queued)."""

    QUEUED = "QUEUED"
    ADMITTED = "ADMITTED"
    DONE = "DONE"
    REFUSED = "REFUSED"
    CANCELLED = "CANCELLED"


__all__ = ["ACTIVE_STATES", "ChunkState", "JobState", "KILL_OUTCOMES", "Outcome", "SubmissionState"]
