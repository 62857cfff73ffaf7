"""Schedules: one job per cron time, with the run time in the template (``{date}``...).

A missed run (squall was down at that time) is run once on start: if several
cron times passed since the newest fired one, only the most recent of them
runs. The newest fired time is in the seen record and moves in the same
transaction that claims the run's job (:mod:`squall.triggers.seen`). The
first start of a schedule fires nothing for the past: it remembers "now" as
its baseline. The clock is injectable, so tests need not wait for minutes.
"""

from __future__ import annotations

import threading
from datetime import datetime, timezone
from typing import Callable
from zoneinfo import ZoneInfo

from croniter import croniter

from squall.errors import SpecError
from squall.triggers.handover import Report, Runner, hand_over, no_report, recover
from squall.triggers.rules import ScheduleRule
from squall.triggers.seen import SeenRecord
from squall.triggers.template import run_job_id, run_spec


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def due_run(rule: ScheduleRule, last_fired: datetime, now: datetime) -> datetime | None:
    """The one run to fire at ``now``: the newest cron time in ``(last_fired, now]``, in the rule's zone; else None."""
    local_now = now.astimezone(_zone(rule))
    newest = croniter(rule.cron, local_now).get_prev(datetime)
    following = croniter(rule.cron, newest).get_next(datetime)
    if following <= local_now:  # croniter's get_prev skips a cron time equal to ``now``
        newest = following
    return newest if newest > last_fired else None


def next_run(rule: ScheduleRule, now: datetime) -> datetime:
    """The first cron time after ``now``."""
    return croniter(rule.cron, now.astimezone(_zone(rule))).get_next(datetime)


def _zone(rule: ScheduleRule) -> ZoneInfo:
    try:
        return ZoneInfo(rule.timezone)
    except (KeyError, ValueError) as exc:
        raise SpecError(f"schedule {rule.name!r}: field `timezone`: unknown time zone {rule.timezone!r}") from exc


def check(rule: ScheduleRule) -> None:
    """Refuse a bad cron expression or time zone, naming the field."""
    if not croniter.is_valid(rule.cron):
        raise SpecError(f"schedule {rule.name!r}: field `cron`: {rule.cron!r} is not a cron expression (e.g. `0 2 * * *`)")
    _zone(rule)
    run_spec(rule.template, utc_now().astimezone(_zone(rule)), "template-check")


class ScheduleTrigger:
    """One schedule rule: at each tick, claims and hands over the due run, if any."""

    def __init__(self, rule: ScheduleRule, seen: SeenRecord, runner: Runner,
                 clock: Callable[[], datetime] = utc_now, report: Report = no_report) -> None:
        check(rule)
        self.rule, self.seen, self.runner, self.clock, self.report = rule, seen, runner, clock, report
        self.rule_id = rule.rule_id()

    def recover(self) -> int:
        """Hand over a run claimed before a crash but maybe never handed over."""
        return recover(self.seen, self.rule_id, self.runner, self.report, self.rule.template)

    def tick(self) -> datetime | None:
        """Fire the due run, if any, and return its time."""
        now = self.clock()
        last = self.seen.last_fired(self.rule_id)
        if last is None:
            self.seen.set_fired(self.rule_id, now)  # the baseline: runs before the first start are not "missed"
            return None
        run = due_run(self.rule, last, now)
        if run is None:
            return None
        job_id = run_job_id(self.rule.name, run.astimezone(timezone.utc))
        spec = run_spec(self.rule.template, run, job_id)
        if self.seen.claim_run(self.rule_id, run, job_id, spec.to_json()):
            hand_over(self.seen, self.rule_id, run.astimezone(timezone.utc).isoformat(), job_id, spec, self.runner, self.report)
        return run

    def seconds_to_next(self) -> float:
        now = self.clock()
        return max(0.0, (next_run(self.rule, now) - now).total_seconds())


def run_schedule(trigger: ScheduleTrigger, stop: threading.Event, max_sleep_s: float = 30.0) -> None:
    """Tick ``trigger`` at each cron time until ``stop`` is set (waking at least every ``max_sleep_s``)."""
    trigger.recover()
    while not stop.is_set():
        trigger.tick()
        stop.wait(min(max_sleep_s, trigger.seconds_to_next() + 0.05))
