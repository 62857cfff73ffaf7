"""Triggers by name: what starts jobs without anyone running ``squall run``.

A trigger registers an object (:class:`TriggerKind`) that names its rule
(a pydantic model: the fields of its table in the serve config), checks a
rule before anything starts, and gives the loop a thread runs for a rule.
``watch`` starts a job per file that arrives in a folder or under a prefix;
``schedule`` starts one per cron time; ``sqs-events`` one per S3 notification or
scheduled event that arrives on an SQS queue. Another package adds one under the
entry point group ``squall.triggers``; its rules go in the serve config's
``[[triggers]]`` tables with ``kind = "NAME"``.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol

from pydantic import BaseModel

from squall.errors import SpecError
from squall.registry import Plugin, Registry

if TYPE_CHECKING:
    from squall.triggers.service import Submit


class TriggerKind(Protocol):
    """What a trigger registers."""

    Rule: type[BaseModel]
    section: str
    """The serve config's own table for its rules (``watches``), besides ``[[triggers]] kind = NAME``."""

    def check(self, rule: Any) -> None:
        """Raise :class:`~squall.errors.UsageError` naming what to fix in ``rule`` (a missing folder, a bad cron
        expression, a template that is not a valid spec); nothing is started."""

    def loop(self, rule: Any, submit: Submit, state_dir: Path, stop: threading.Event) -> Callable[[], None]:
        """The body of the thread that submits ``rule``'s jobs until ``stop`` is set."""

    def describe(self, rule: Any) -> str:
        """The rule in a few words, for thread names and logs."""


TRIGGERS: Registry[TriggerKind] = Registry("trigger", "squall.triggers", (
    Plugin("watch", "squall.triggers.kinds:FILE_ARRIVAL", "serve"),
    Plugin("schedule", "squall.triggers.kinds:CRON", "serve"),
    Plugin("sqs-events", "squall.triggers.sqs_events:QUEUE_EVENTS", "aws"),
), error=SpecError)
"""The built-in triggers: file arrival (``watch``), cron schedules (``schedule``), and the S3 notifications and
scheduled events on an SQS queue (``sqs-events``, the events queue of ``squall deploy aws``)."""
