"""Triggers: jobs started by file arrival (a local folder or an object-store prefix) or by a cron schedule.

The service calls :func:`start_triggers`; ``squall watch`` drives one
:class:`~squall.triggers.file_arrival.FileArrival` in-process. Nothing is
imported at import time beyond this module's own names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from squall.triggers.rules import ScheduleRule, WatchRule
    from squall.triggers.service import Submit, start_triggers

__all__ = ["ScheduleRule", "Submit", "WatchRule", "start_triggers"]


def __getattr__(name: str) -> object:
    if name in ("WatchRule", "ScheduleRule"):
        from squall.triggers import rules

        return getattr(rules, name)
    if name in ("start_triggers", "Submit"):
        from squall.triggers import service

        return getattr(service, name)
    raise AttributeError(name)
