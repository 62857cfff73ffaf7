"""Every exception squall raises on purpose. Catch :class:`SquallError` to catch them all.

Each message says what went wrong *and* what to change. The tree::

    SquallError                   exit code 1
    ├── UsageError                exit code 2: the request cannot run as given; nothing was done
    │   ├── SpecError             a spec field; the message names it
    │   │   └── SpecRejected      a spec submitted over HTTP; ``fields`` names the fields at fault
    │   ├── InputError            an input cannot be listed or read (also NotRetryable in a worker)
    │   ├── ModelLoadError        the model cannot be loaded
    │   ├── OutputExistsError     the output holds another job's results
    │   ├── OutputUnwritable      the output cannot be created or written
    │   ├── JobNotFoundError, JobStateError
    │   ├── PathNotAllowed        a location outside the service's allowed roots
    │   ├── SecretsMissing        a stored job's secrets are found nowhere
    │   ├── QueueUnreachable      a job's queue cannot be found or reached
    │   └── MissingDependency     a plugin, storage protocol or database driver is not installed
    │       └── UnknownPlugin     a name no registry holds
    ├── JobCancelled              exit code 130: a real cancel (squall cancel, Ctrl-C, SIGTERM)
    ├── EnvironmentFault          the machine, not the data: a full or read-only output
    ├── StoreError                the job store is unusable
    ├── OutputUnreachable         the output cannot be reached to commit
    ├── MessageRefused            a queue message a worker will not act on (left to the queue's dead-letter queue)
    └── InvocationError           raised inside an invocation; it becomes the invocation's report
        ├── OutputShapeError      the model's output is not one row per input row
        ├── BatchShapeError       a batch cannot become the model's matrix
        └── ErrorBudgetExceeded   too many rows of one chunk fail: the model, not the data

Whether a failed invocation is tried again is explicit: an error that is
:class:`NotRetryable` (an input gone since planning) is not; anything else a
model or a reader raises is (``no_retry_on`` adds names). Errors that happen
in a worker cross the process boundary as :class:`ErrorInfo` (plain data),
never as pickled exceptions.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import Iterator


class SquallError(Exception):
    """Root of every error squall raises on purpose."""

    exit_code = 1


class NotRetryable:
    """Marks an error that another attempt at the same chunk cannot fix: its chunk is dead-lettered at once."""


def is_retryable(exc: BaseException) -> bool:
    """Whether an invocation that failed with ``exc`` is worth another attempt."""
    return not isinstance(exc, NotRetryable)


class UsageError(SquallError):
    """The request cannot be run as given (bad spec, input, model, output); nothing was done."""

    exit_code = 2


class SpecError(UsageError):
    """A spec field is missing or invalid; the message names the field."""


class SpecRejected(SpecError):
    """A spec submitted to the service is invalid; ``fields`` names the fields at fault."""

    def __init__(self, message: str, fields: list[str]) -> None:
        super().__init__(message)
        self.fields = fields


class InputError(UsageError, NotRetryable):
    """An input cannot be listed or read; the message names the file. Raised in a worker (a file removed
    after planning), it is not retried."""


class ModelLoadError(UsageError):
    """The model cannot be loaded or does not offer the requested method."""


class OutputExistsError(UsageError):
    """The output location holds another job's results; pass ``--overwrite`` to replace them."""


class OutputUnwritable(UsageError):
    """The output location cannot be created or written before any work starts (a read-only or full
    filesystem, a file in the way); the message names it."""


class JobNotFoundError(UsageError):
    """No job with that id exists in the state directory."""


class JobStateError(UsageError):
    """The job is not in a state that allows this (a duplicate id, nothing to redrive, not running)."""


class PathNotAllowed(UsageError):
    """A location in a request lies outside the service's ``allowed_roots``."""


class SecretsMissing(UsageError):
    """A stored job needs secrets that were not stored with it and cannot be found again; the message names each."""


class QueueUnreachable(UsageError):
    """A queue a job or a worker needs cannot be found or reached; the message names it and what to check."""


class MissingDependency(UsageError):
    """What a job needs is not installed (a flavor's library, a storage protocol's package, a database
    driver); the message says what to install."""


class UnknownPlugin(MissingDependency):
    """A name no registry entry or installed package provides; the message lists the names there are."""


class JobCancelled(SquallError):
    """The job was asked to stop (``squall cancel``, Ctrl-C or SIGTERM); what was committed is kept."""

    exit_code = 130


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


class OutputUnreachable(SquallError):
    """The output cannot be reached to commit a chunk (its database connection keeps failing); nothing
    committed is lost, and ``squall resume`` finishes the job once the output answers again."""


class MessageRefused(SquallError):
    """A queue message a worker will not act on: not squall's, of a version it does not know, or naming a job
    task it cannot read. The worker leaves it on the queue, whose redrive policy moves it to the dead-letter
    queue after ``maxReceiveCount`` receives (``squall dlq --queue NAME`` shows why)."""


class StackFailed(SquallError):
    """CloudFormation could not create, update or delete a ``squall deploy`` stack; the message has its reasons."""


class InvocationError(SquallError):
    """Raised inside an invocation; the invocation reports it (an error row, or a failed attempt)."""


class OutputShapeError(InvocationError):
    """The model returned something squall cannot turn into one row per input row."""


class BatchShapeError(InvocationError):
    """A batch cannot be turned into the numeric matrix the model takes."""


class ErrorBudgetExceeded(InvocationError):
    """So many rows of one chunk raise that the model, not the data, is at fault (retried like any failure)."""


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
