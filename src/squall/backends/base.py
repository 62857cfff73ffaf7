"""The ``Backend`` contract: a pool of warm workers that run invocations for the coordinator.

A backend starts workers, hands one chunk at a time to an idle worker, and
tells the coordinator what happened through events. It keeps no job state:
which chunk a worker holds is the coordinator's business. When a worker
dies or is killed, the backend replaces it with a fresh one (a cold start).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, Sequence, TypeVar, Union

from pydantic import BaseModel, ConfigDict

from squall.errors import ErrorInfo
from squall.models.base import ModelRef
from squall.plan.chunk import Chunk
from squall.runtime.task import InvocationReport, JobTask

if TYPE_CHECKING:
    from squall.spec import JobSpec

_O = TypeVar("_O", bound="BackendOptions")


@dataclass(frozen=True)
class WorkerReady:
    """A worker loaded the model and can take work; ``init_s`` is its cold start."""

    worker: int
    init_s: float


@dataclass(frozen=True)
class InvocationDone:
    """A worker finished an invocation (successfully or not) and is idle again."""

    worker: int
    report: InvocationReport


@dataclass(frozen=True)
class InvocationStarted:
    """The invocation handed to ``worker`` began only now (a queue backend: a consumer took its message off the
    queue); its time limit counts from here rather than from when it was handed over."""

    worker: int


@dataclass(frozen=True)
class WorkerDied:
    """A worker ended without being asked to: ``cause`` is ``crash`` or ``memory`` (killed over its limit)."""

    worker: int
    reason: str
    cause: str = "crash"


@dataclass(frozen=True)
class WorkerLoadFailed:
    """A worker could not load the model; the error is the same for every worker."""

    worker: int
    error: ErrorInfo


@dataclass(frozen=True)
class WorkerRecycling:
    """When workers are replaced: over ``memory_mb`` while busy (a kill, the attempt fails), or
    after ``max_invocations`` or above ``rss_mb`` between invocations (a planned restart)."""

    memory_mb: int | None = None
    max_invocations: int | None = None
    rss_mb: int | None = None

    @classmethod
    def of(cls, spec: JobSpec) -> WorkerRecycling:
        """As ``spec`` sets it: ``memory``, ``max_invocations_per_worker``, ``recycle_rss_mb``."""
        return cls(spec.memory, spec.max_invocations_per_worker, spec.recycle_rss_mb)


WorkerEvent = Union[WorkerReady, InvocationStarted, InvocationDone, WorkerDied, WorkerLoadFailed]


class Backend(Protocol):
    """A pool of warm workers: ``local`` (processes on this machine) or ``ray`` (actors on a Ray cluster)."""

    def start(self, model: ModelRef, workers: int) -> None:
        """Begin starting ``workers`` workers that load ``model``; returns before they are ready."""

    def configure(self, task: JobTask) -> None:
        """Give every worker, present and future, the job's task; no invocation is submitted before this."""

    def idle(self) -> list[int]:
        """Workers that are ready and hold no invocation."""

    def check_reach(self, files: Sequence[tuple[str, int | None]], output: str) -> None:
        """Raise :class:`squall.errors.InputError` unless every worker can read ``files`` (path, size if known)
        and write under ``output``; remote URIs are reachable by definition."""

    def submit(self, worker: int, chunk: Chunk, attempt: int, output_schema: str | None = None) -> None:
        """Hand ``chunk`` (attempt number ``attempt``) to an idle ``worker``, with the job's output schema
        (:func:`squall.io.output_schema.schema_text`) once the job has one: the worker casts its part to it."""

    def scale(self, waiting: int) -> None:
        """``waiting`` chunks wait for a worker: a pool that can grow or shrink may do so now (the local pool cannot)."""

    def wait(self, timeout: float) -> list[WorkerEvent]:
        """Events that happened, waiting up to ``timeout`` seconds for the first."""

    def kill(self, worker: int) -> None:
        """Stop ``worker`` at once, whatever it is doing, and start a fresh one in its place."""

    def cold_starts(self) -> int:
        """How many times the model was loaded so far."""

    def worker_starts(self) -> int:
        """How many worker processes (or actors) were started so far, warm or cold."""

    def shutdown(self) -> None:
        """Stop every worker; the backend cannot be used afterwards."""


class BackendOptions(BaseModel):
    """The options of one backend, nested under it in a spec: ``[backend.NAME]`` in a TOML spec file,
    ``--NAME-OPTION`` on the command line, ``backend_options: {NAME: {...}}`` in JSON. This base has none."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cli_aliases: ClassVar[dict[str, str]] = {}
    """Shorter command-line flags for some options (``{"queue": "--queue"}`` beside ``--sqs-queue``)."""

    def threads_per_worker(self) -> int | None:
        """BLAS/OpenMP threads each worker may use, when the backend decides it (``None``: cores ÷ workers)."""
        return None

    def gpus_per_worker(self) -> float:
        """GPUs each worker has to itself (above 0, the model is placed on its GPU)."""
        return 0.0

    def check(self, spec: JobSpec) -> None:
        """Raise ``ValueError`` naming the field when these options do not go with the rest of ``spec``."""

    def capped(self: _O, workers: int) -> _O:
        """These options for a pool that must not grow past ``workers`` (an account-wide limit granted no more)."""
        return self


class BackendKind(Protocol):
    """What a backend registers (its class): the options it takes, and how it is made from a spec."""

    Options: type[BackendOptions]

    def from_spec(self, spec: JobSpec, options: Any, log_dir: Path) -> Backend:
        """A backend for ``spec`` (with ``options``, its ``Options``), not started; worker logs go to ``log_dir``."""
