"""The exceptions squall raises. Catch :class:`SquallError` to catch them all.

Each message says what went wrong *and* what to change. Errors that happen in
a worker cross the process boundary as :class:`ErrorInfo` (plain data), never
as pickled exceptions.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import Iterator


class SquallError(Exception):
    """Root of every error squall raises on purpose."""

    exit_code = 1


class UsageError(SquallError):
    """The request cannot be run as given (bad spec, input, model, output); nothing was done."""

    exit_code = 2


class SpecError(UsageError):
    """A spec field is missing or invalid; the message names the field."""


class InputError(UsageError):
    """An input cannot be listed or read; the message names the file."""


class ModelLoadError(UsageError):
    """The model cannot be loaded or does not offer the requested method."""


class OutputExistsError(UsageError):
    """The output location holds another job's results; pass ``--overwrite`` to replace them."""


class JobNotFoundError(UsageError):
    """No job with that id exists in the state directory."""


class JobStateError(UsageError):
    """The job is not in a state that allows this (a duplicate id, nothing to redrive, not running)."""


class OutputUnwritable(UsageError):
    """The output location cannot be created or written before any work starts (a read-only or full
    filesystem, a file in the way); the message names it."""


class EnvironmentFault(SquallError):
    """The machine, not the data, failed the job: the output's disk is full, over its quota or read-only.

    No chunk is blamed (nothing is split, retried or dead-lettered): the job stops at once with the
    reason, keeping every committed part, and ``squall resume JOB`` finishes it once the cause is fixed.
    """


def stopped_by_environment(reason: str, job_id: str) -> EnvironmentFault:
    """The error that stops job ``job_id`` because its environment failed: the reason, what was kept, how to finish."""
    return EnvironmentFault(
        f"{reason}; the job stopped without blaming any chunk and keeps its committed parts. Fix the cause "
        f"(free space, make the output writable, wait for the store to answer), then `squall resume {job_id}`"
    )


ENVIRONMENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})
"""Errors that say a location refuses writes (full, over quota, read-only, not permitted): retrying or
splitting the chunk cannot help."""


def causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then each error it was raised from or while handling, as a traceback shows them."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        yield current
        seen.add(id(current))
        current = current.__cause__ if current.__cause__ is not None or current.__suppress_context__ else current.__context__


def environment_cause(exc: BaseException) -> OSError | None:
    """The error in ``exc``'s chain that blames the environment (an ``OSError`` with one of
    :data:`ENVIRONMENT_ERRNOS`), or ``None`` when the data or the model may be at fault."""
    for cause in causes(exc):
        if isinstance(cause, OSError) and cause.errno in ENVIRONMENT_ERRNOS:
            return cause
    return None


class StoreError(SquallError):
    """The state store is unusable (corrupt, locked by another coordinator, wrong version)."""


@dataclass(frozen=True)
class ErrorInfo:
    """An exception as plain data, safe to send between processes and store as JSON."""

    type: str
    message: str
    traceback: str = ""

    @classmethod
    def from_exception(cls, exc: BaseException, traceback: str = "") -> ErrorInfo:
        return cls(type=type(exc).__name__, message=str(exc), traceback=traceback)

    def __str__(self) -> str:
        return f"{self.type}: {self.message}"
