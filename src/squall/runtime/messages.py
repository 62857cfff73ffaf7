"""The messages between the coordinator's side and a worker, as typed records every transport carries.

The local backend frames them on pipes and on its fork server's socket, the
Ray backend passes them as actor-call arguments and answers, and a queue
backend puts them in queue messages. Each record is a frozen dataclass;
:func:`encode` turns one into JSON-ready data tagged with its ``type``, and
:func:`decode` turns that data back into the record. JSON, never pickle: a
worker can be any process that speaks this, and an error crosses as text.

To a worker: :class:`Load` (the cold start), :class:`Configure` (the job's
task, once), :class:`Invoke` (one chunk), :class:`Stop`.
From a worker: :class:`Ready`, :class:`LoadFailed`, :class:`Reported` (an
invocation's report), :class:`Crashed` and :class:`OverMemory` (an invocation
that ended its worker, where the worker itself can tell).
The fork server of the local backend: :class:`Fork` (with the child's pipe
ends attached), :class:`Forked`, :class:`Exited`, :class:`Unforkable`, :class:`Gone`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, Union

from squall.errors import ErrorInfo
from squall.models.base import ModelRef
from squall.plan.chunk import Chunk
from squall.runtime.task import InvocationReport, JobTask

MESSAGE_VERSION = 1


@dataclass(frozen=True)
class Load:
    """Load ``model`` as worker ``worker``; the start-up time counts from ``spawned_at`` (when the worker was asked for)."""

    worker: int
    model: ModelRef
    batch_format: str = "auto"
    spawned_at: float = 0.0


@dataclass(frozen=True)
class Configure:
    """The job's task: what every invocation needs besides its chunk. Sent once per worker, before any invocation."""

    task: JobTask


@dataclass(frozen=True)
class Invoke:
    """Run attempt ``attempt`` of ``chunk``; cast the output to ``output_schema`` (base64 Arrow IPC) once the job has one."""

    chunk: Chunk
    attempt: int
    output_schema: str | None = None


@dataclass(frozen=True)
class Stop:
    """Exit at once."""


@dataclass(frozen=True)
class Ready:
    """The model is loaded: ``init_s`` seconds after the worker was asked for (its cold start)."""

    pid: int
    init_s: float


@dataclass(frozen=True)
class LoadFailed:
    """The model (or the job's task) cannot be loaded here; every worker would fail the same way."""

    error: ErrorInfo


@dataclass(frozen=True)
class Reported:
    """An invocation ended (well or not) and the worker is idle again; ``rss_mb`` is its resident memory now."""

    report: InvocationReport
    rss_mb: float = 0.0


@dataclass(frozen=True)
class Crashed:
    """The invocation ended the worker the way a process exit would (``SystemExit`` in the model)."""

    error: ErrorInfo


@dataclass(frozen=True)
class OverMemory:
    """The invocation went over the memory limit, measured where the worker runs; the worker must be killed."""

    used_mb: float


@dataclass(frozen=True)
class Fork:
    """Fork server: a warm child for ``worker`` on the attached pipe ends; ``request`` numbers the answers."""

    worker: int
    request: int
    sent_at: float


@dataclass(frozen=True)
class Forked:
    """Fork server: the child for ``request`` is ``pid``."""

    worker: int
    request: int
    pid: int


@dataclass(frozen=True)
class Exited:
    """Fork server: a child ended with ``status`` (negative: killed by that signal)."""

    request: int | None
    pid: int
    status: int


@dataclass(frozen=True)
class Unforkable:
    """Fork server: loading the model started ``threads`` threads, so forking is unsafe; workers start from scratch."""

    threads: int


@dataclass(frozen=True)
class Gone:
    """Fork server: it has exited (its end of the channel closed); never sent, seen by the reader."""


ToWorker = Union[Load, Configure, Invoke, Stop]
FromWorker = Union[Ready, LoadFailed, Reported, Crashed, OverMemory]
Message = Union[ToWorker, FromWorker, Fork, Forked, Exited, Unforkable, Gone]

_ENCODERS: dict[type, Callable[[Any], dict[str, Any]]] = {
    Load: lambda m: {"worker": m.worker, "model": asdict(m.model), "batch_format": m.batch_format, "spawned_at": m.spawned_at},
    Configure: lambda m: {"task": m.task.to_dict()},
    Invoke: lambda m: {"chunk": m.chunk.to_dict(), "attempt": m.attempt, "output_schema": m.output_schema},
    LoadFailed: lambda m: {"error": m.error.__dict__},
    Reported: lambda m: {"report": m.report.to_dict(), "rss_mb": m.rss_mb},
    Crashed: lambda m: {"error": m.error.__dict__},
}
_DECODERS: dict[str, Callable[[dict[str, Any]], Message]] = {
    "load": lambda d: Load(d["worker"], ModelRef(**d["model"]), d.get("batch_format", "auto"), d.get("spawned_at", 0.0)),
    "configure": lambda d: Configure(JobTask.from_dict(d["task"])),
    "invoke": lambda d: Invoke(Chunk.from_dict(d["chunk"]), int(d["attempt"]), d.get("output_schema")),
    "load_failed": lambda d: LoadFailed(ErrorInfo(**d["error"])),
    "reported": lambda d: Reported(InvocationReport.from_dict(d["report"]), float(d.get("rss_mb", 0.0))),
    "crashed": lambda d: Crashed(ErrorInfo(**d["error"])),
}
_TYPES: dict[type, str] = {
    Load: "load", Configure: "configure", Invoke: "invoke", Stop: "stop", Ready: "ready", LoadFailed: "load_failed",
    Reported: "reported", Crashed: "crashed", OverMemory: "over_memory", Fork: "fork", Forked: "forked",
    Exited: "exited", Unforkable: "unforkable", Gone: "gone",
}
_BY_NAME = {name: kind for kind, name in _TYPES.items()}


def encode(message: Message) -> dict[str, Any]:
    """``message`` as JSON-ready data with its ``type``."""
    kind = type(message)
    body = _ENCODERS[kind](message) if kind in _ENCODERS else {f.name: getattr(message, f.name) for f in fields(message)}
    return {"type": _TYPES[kind], **body}


def decode(data: dict[str, Any]) -> Message:
    """The record ``data`` (made by :func:`encode`) describes; raises ``ValueError`` for an unknown ``type``."""
    name = data.get("type")
    if name in _DECODERS:
        return _DECODERS[name](data)
    kind = _BY_NAME.get(str(name))
    if kind is None:
        raise ValueError(f"unknown message type {name!r}")
    return kind(**{f.name: data[f.name] for f in fields(kind)})  # type: ignore[call-arg]


__all__ = [
    "Configure", "Crashed", "Exited", "Fork", "Forked", "FromWorker", "Gone", "Invoke", "Load", "LoadFailed", "Message",
    "OverMemory", "Ready", "Reported", "Stop", "ToWorker", "Unforkable", "decode", "encode", "MESSAGE_VERSION",
]
