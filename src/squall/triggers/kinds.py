"""The two built-in triggers: file arrival (``watch``) and cron schedules (``schedule``)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Callable

from squall.spec import JobSpec
from squall.triggers.handover import Runner
from squall.triggers.rules import ScheduleRule, WatchRule
from squall.triggers.seen import SeenRecord
from squall.triggers.service import Submit

log = logging.getLogger("squall.triggers")


class FileArrival:
    """One job per new file under a local folder or an object-store prefix, once it has settled."""

    Rule = WatchRule
    section = "watches"

    def check(self, rule: WatchRule) -> None:
        from squall.triggers.file_arrival import check_template, lister_for

        lister_for(rule)
        check_template(rule)

    def loop(self, rule: WatchRule, submit: Submit, state_dir: Path, stop: threading.Event) -> Callable[[], None]:
        def watch(seen: SeenRecord) -> None:
            from squall.triggers.file_arrival import FileTrigger, LocalLister, lister_for, poll_forever, watch_local

            lister = lister_for(rule)
            trigger = FileTrigger(rule, lister, seen, _runner(submit, "watch"))
            (watch_local if isinstance(lister, LocalLister) else poll_forever)(trigger, stop)

        return _retrying(f"watch {rule.location}", watch, rule.poll_s, state_dir, stop)

    def describe(self, rule: WatchRule) -> str:
        return f"watch {rule.location}"


class CronSchedule:
    """One job per cron time; a run missed while the service was down runs once, for the newest missed time."""

    Rule = ScheduleRule
    section = "schedules"

    def check(self, rule: ScheduleRule) -> None:
        from squall.triggers.schedule import check

        check(rule)

    def loop(self, rule: ScheduleRule, submit: Submit, state_dir: Path, stop: threading.Event) -> Callable[[], None]:
        def schedule(seen: SeenRecord) -> None:
            from squall.triggers.schedule import ScheduleTrigger, run_schedule

            run_schedule(ScheduleTrigger(rule, seen, _runner(submit, "schedule")), stop)

        return _retrying(f"schedule {rule.name}", schedule, 60.0, state_dir, stop)

    def describe(self, rule: ScheduleRule) -> str:
        return f"schedule {rule.name}"


FILE_ARRIVAL = FileArrival()
CRON = CronSchedule()


def _runner(submit: Submit, source: str) -> Runner:
    def run(spec: JobSpec) -> None:
        submit(spec, source=source)
        return None

    return run


def _retrying(
    name: str, body: Callable[[SeenRecord], None], pause_s: float, state_dir: Path, stop: threading.Event
) -> Callable[[], None]:
    """A thread body that runs ``body`` until ``stop``, logging what it raises and trying again after ``pause_s``."""

    def loop() -> None:
        seen = SeenRecord(state_dir)
        try:
            while not stop.is_set():
                try:
                    body(seen)
                except Exception:
                    log.exception("%s failed; retrying in %g s", name, pause_s)
                    stop.wait(pause_s)
        finally:
            seen.close()

    return loop
