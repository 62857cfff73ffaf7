"""The entry point ``squall serve`` calls: :func:`start_triggers`."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Callable, Protocol

from squall.spec import JobSpec
from squall.triggers.handover import Runner
from squall.triggers.rules import ScheduleRule, WatchRule
from squall.triggers.seen import SeenRecord

class Submit(Protocol):
    """The service's queue: ``submit(spec, source="watch") -> job_id`` (the scheduler's bound ``submit`` fits).

    Contract: a spec whose ``job_id`` the queue already holds is not queued
    twice (return the id, or raise :class:`~squall.errors.JobStateError`).
    """

    def __call__(self, spec: JobSpec, *, source: str) -> str: ...

log = logging.getLogger("squall.triggers")


def start_triggers(
    watches: list[WatchRule], schedules: list[ScheduleRule], submit: Submit, state_dir: Path, stop: threading.Event
) -> list[threading.Thread]:
    """Start one daemon thread per rule; each submits jobs until ``stop`` is set. Returns the started threads.

    Bad rules (a missing folder, a bad cron expression, a template that is not
    a valid spec) raise :class:`~squall.errors.UsageError` here, before any
    thread starts. Jobs are submitted with ``source`` ``"watch"`` or
    ``"schedule"``; their job ids are deterministic (see
    :mod:`squall.triggers.seen` for why that makes each file and run time run
    exactly once). A thread that meets an error logs it and retries after
    ``poll_s`` (watches) or a minute (schedules).
    """
    check_rules(watches, schedules)
    targets: list[tuple[str, Callable[[], None]]] = []
    for rule in watches:
        targets.append((f"watch {rule.location}", _watch_loop(rule, submit, state_dir, stop)))
    for schedule in schedules:
        targets.append((f"schedule {schedule.name}", _schedule_loop(schedule, submit, state_dir, stop)))
    threads = [threading.Thread(target=target, name=f"squall-trigger {name}", daemon=True) for name, target in targets]
    for thread in threads:
        thread.start()
    return threads


def check_rules(watches: list[WatchRule], schedules: list[ScheduleRule]) -> None:
    """Raise :class:`~squall.errors.UsageError` for a missing folder, a bad cron expression or time zone, or a
    template that is not a valid spec; nothing is started."""
    from squall.triggers.file_arrival import check_template, lister_for
    from squall.triggers.schedule import check

    for rule in watches:
        lister_for(rule)
        check_template(rule)
    for schedule in schedules:
        check(schedule)


def _runner(submit: Submit, source: str) -> Runner:
    def run(spec: JobSpec) -> None:
        submit(spec, source=source)
        return None

    return run


def _watch_loop(rule: WatchRule, submit: Submit, state_dir: Path, stop: threading.Event) -> Callable[[], None]:
    def watch(seen: SeenRecord) -> None:
        from squall.triggers.file_arrival import FileTrigger, LocalLister, lister_for, poll_forever, watch_local

        lister = lister_for(rule)
        trigger = FileTrigger(rule, lister, seen, _runner(submit, "watch"))
        (watch_local if isinstance(lister, LocalLister) else poll_forever)(trigger, stop)

    return _retrying(f"watch {rule.location}", watch, rule.poll_s, state_dir, stop)


def _schedule_loop(rule: ScheduleRule, submit: Submit, state_dir: Path, stop: threading.Event) -> Callable[[], None]:
    def schedule(seen: SeenRecord) -> None:
        from squall.triggers.schedule import ScheduleTrigger, run_schedule

        run_schedule(ScheduleTrigger(rule, seen, _runner(submit, "schedule")), stop)

    return _retrying(f"schedule {rule.name}", schedule, 60.0, state_dir, stop)


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
