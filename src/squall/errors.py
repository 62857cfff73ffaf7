"""The exceptions squall raises. Catch :class:`SquallError` to catch them all.

Each message says what went wrong *and* what to change. Errors that happen in
a worker cross the process boundary as :class:`ErrorInfo` (plain data), never
as pickled exceptions.
"""

from __future__ import annotations

from dataclasses import dataclass


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


class StoreError(SquallError):
    """The state store is unusable (corrupt, locked by another coordinator, wrong version)."""


class OutputUnreachable(SquallError):
    """The output cannot be reached to commit a chunk (its database connection keeps failing); nothing
    committed is lost, and ``squall resume`` finishes the job once the output answers again."""


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
