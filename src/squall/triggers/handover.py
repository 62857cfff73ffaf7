"""Handing a claimed job over to whoever runs it, and handing over again after a crash (see :mod:`squall.triggers.seen`)."""

from __future__ import annotations

import json

from typing import Any, Callable, Mapping

from squall.errors import JobStateError, UsageError
from squall.secrets import refill
from squall.spec import JobSpec, nest_backend_options
from squall.triggers.seen import SeenRecord

Runner = Callable[[JobSpec], "str | None"]
"""Hands a job over; returns its end state if it ran to the end (``squall watch``), else None (queued).

Contract: a job id the receiver already has is not run a second time; the
receiver either finishes that job or raises :class:`~squall.errors.JobStateError`.
"""

Report = Callable[[str, str, "str | None"], None]
"""Told (key, job id, end state or None) after each hand-over; ``squall watch`` prints it."""


def hand_over(seen: SeenRecord, rule_id: str, key: str, job_id: str, spec: JobSpec, runner: Runner, report: Report) -> None:
    """Run or queue the job claimed for ``key``, then mark it submitted in the seen record."""
    try:
        result = runner(spec)
    except JobStateError:  # the receiver already has this job id: it was handed over before a crash
        result = None
    except UsageError as exc:  # refused before it started (an unreadable file): recorded, not retried forever
        result = f"REFUSED: {exc}"
    seen.submitted(rule_id, key, result)
    report(key, job_id, result)


def recover(seen: SeenRecord, rule_id: str, runner: Runner, report: Report, template: Mapping[str, Any]) -> int:
    """Hand over again, with the same job id and spec, every job of ``rule_id`` claimed but maybe never handed over.

    The seen record holds each spec without its secrets; they come back from the rule's ``template``.
    """
    entries = seen.unsubmitted(rule_id)
    for entry in entries:
        spec = JobSpec.model_validate(refill(json.loads(entry.spec), nest_backend_options(template)))
        hand_over(seen, rule_id, entry.key, entry.job_id, spec, runner, report)
    return len(entries)


def no_report(key: str, job_id: str, result: str | None) -> None:
    """The default :data:`Report`: say nothing."""
