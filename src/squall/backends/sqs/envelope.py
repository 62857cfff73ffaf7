"""What travels on the queues: a :class:`Dispatch` (one attempt) on the request queue; a :class:`Started` (a
consumer took it) and a :class:`Reply` (its report) on the results queue. JSON, versioned, never pickled; no credentials (the task is a reference, not its content).

A dispatch holds the chunk descriptor, the attempt number, the job's output
schema once it has one, a reference to the job's task (stored once per job, see
:mod:`.task_object`) and the results queue to reply to. A reply holds the
invocation's report and the slot (the coordinator's in-flight place) the
attempt was sent from. :func:`Dispatch.parse` refuses anything else with
:class:`~squall.errors.MessageRefused`, saying why.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from squall.errors import MessageRefused
from squall.runtime.messages import Invoke, Reported, decode, encode

ENVELOPE_VERSION = 1
_DISPATCH, _STARTED, _REPLY = "squall.dispatch", "squall.started", "squall.reply"


@dataclass(frozen=True)
class Dispatch:
    """One attempt of one chunk, as a request-queue message."""

    job_id: str
    task: str
    """URI of the job's task (``<output>/_squall/<job_id>/task.json``)."""
    slot: int
    invoke: Invoke
    reply_to: str
    """URL of the results queue."""
    timeout_s: float | None = None
    """The invocation's time limit: a worker that runs past it ends itself, as a function platform would."""
    sent_at: float = 0.0
    version: int = ENVELOPE_VERSION

    def to_json(self) -> str:
        """The message body."""
        return json.dumps({
            "kind": _DISPATCH, "version": self.version, "job_id": self.job_id, "task": self.task, "slot": self.slot,
            "invoke": encode(self.invoke), "reply_to": self.reply_to, "timeout_s": self.timeout_s,
            "sent_at": self.sent_at or time.time(),
        })

    @classmethod
    def parse(cls, body: str) -> Dispatch:
        """The dispatch ``body`` holds; raises :class:`MessageRefused` saying why it is not one this worker runs."""
        data = _envelope(body, _DISPATCH)
        try:
            invoke = decode(data["invoke"])
            if not isinstance(invoke, Invoke):
                raise TypeError(f"it carries a {type(invoke).__name__}, not an invocation")
            timeout = data.get("timeout_s")
            return cls(str(data["job_id"]), str(data["task"]), int(data["slot"]), invoke, str(data["reply_to"]),
                       None if timeout is None else float(timeout), float(data.get("sent_at", 0.0)), int(data["version"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise MessageRefused(f"not a squall dispatch this worker can run: {_reason(exc)}") from None

    def describe(self) -> str:
        """``job J chunk C attempt A``, for logs and the dead-letter listing."""
        return f"job {self.job_id} chunk {self.invoke.chunk.chunk_id} attempt {self.invoke.attempt}"


@dataclass(frozen=True)
class Started:
    """A consumer took attempt ``attempt`` of chunk ``chunk_id`` off the queue: its time limit counts from now."""

    job_id: str
    slot: int
    chunk_id: int
    attempt: int
    version: int = ENVELOPE_VERSION

    @classmethod
    def of(cls, dispatch: Dispatch) -> Started:
        """The notice that ``dispatch`` has started."""
        return cls(dispatch.job_id, dispatch.slot, dispatch.invoke.chunk.chunk_id, dispatch.invoke.attempt)

    def to_json(self) -> str:
        """The message body."""
        return json.dumps({"kind": _STARTED, "version": self.version, "job_id": self.job_id, "slot": self.slot,
                           "chunk_id": self.chunk_id, "attempt": self.attempt})


@dataclass(frozen=True)
class Reply:
    """An invocation's report, as a results-queue message."""

    slot: int
    reported: Reported
    worker: str
    """Which process ran it (``host:pid``, or the Lambda log stream), for the job log."""
    version: int = ENVELOPE_VERSION

    def to_json(self) -> str:
        """The message body."""
        return json.dumps({"kind": _REPLY, "version": self.version, "slot": self.slot, "worker": self.worker,
                           "reported": encode(self.reported)})

    @classmethod
    def parse(cls, body: str) -> Reply:
        """The reply ``body`` holds; raises :class:`MessageRefused` saying why it is not one."""
        data = _envelope(body, _REPLY)
        try:
            reported = decode(data["reported"])
            if not isinstance(reported, Reported):
                raise TypeError(f"it carries a {type(reported).__name__}, not a report")
            return cls(int(data["slot"]), reported, str(data.get("worker", "")), int(data["version"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise MessageRefused(f"not a squall reply: {_reason(exc)}") from None


def parse_result(body: str) -> Started | Reply:
    """What a results-queue message holds; raises :class:`MessageRefused` for anything else."""
    data = _envelope(body, None)
    if data.get("kind") == _STARTED:
        try:
            return Started(str(data["job_id"]), int(data["slot"]), int(data["chunk_id"]), int(data["attempt"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise MessageRefused(f"not a squall start notice: {_reason(exc)}") from None
    return Reply.parse(body)


def _envelope(body: str, kind: str | None) -> dict[str, Any]:
    """The JSON object ``body`` holds, of ``kind`` (any squall kind when ``None``) and this version."""
    try:
        data = json.loads(body)
    except ValueError:
        raise MessageRefused(f"not JSON (starts {body[:40]!r})") from None
    found = data.get("kind") if isinstance(data, dict) else type(data).__name__
    if not isinstance(data, dict) or (found != kind if kind else found not in (_DISPATCH, _STARTED, _REPLY)):
        raise MessageRefused(f"not a {kind or 'squall'} message (kind {found!r})")
    if data.get("version") != ENVELOPE_VERSION:
        raise MessageRefused(
            f"{kind} version {data.get('version')!r}, this squall speaks version {ENVELOPE_VERSION}; run the same "
            "squall version on the coordinator and the workers"
        )
    return data


def _reason(exc: BaseException) -> str:
    return f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
