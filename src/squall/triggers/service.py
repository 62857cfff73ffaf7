"""The entry point ``squall serve`` calls: :func:`start_triggers`, one thread per rule of any registered trigger."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Protocol, Sequence

from squall.spec import JobSpec


class Submit(Protocol):
    """The service's queue: ``submit(spec, source="watch") -> job_id`` (the scheduler's bound ``submit`` fits).

    Contract: a spec whose ``job_id`` the queue already holds is not queued
    twice (return the id, or raise :class:`~squall.errors.JobStateError`).
    """

    def __call__(self, spec: JobSpec, *, source: str) -> str: ...


def start_triggers(
    rules: Sequence[tuple[str, Any]], submit: Submit, state_dir: Path, stop: threading.Event
) -> list[threading.Thread]:
    """Start one daemon thread per rule (``(trigger name, rule)``); each submits jobs until ``stop`` is set.
    Returns the started threads.

    Bad rules raise :class:`~squall.errors.UsageError` here, before any thread
    starts. Jobs are submitted with ``source`` the trigger's name; their job
    ids are deterministic (see :mod:`squall.triggers.seen` for why that makes
    each file and run time run exactly once). A thread that meets an error
    logs it and retries.
    """
    from squall.triggers.registry import TRIGGERS

    check_rules(rules)
    threads = []
    for name, rule in rules:
        kind = TRIGGERS.load(name)
        target = kind.loop(rule, submit, state_dir, stop)
        threads.append(threading.Thread(target=target, name=f"squall-trigger {kind.describe(rule)}", daemon=True))
    for thread in threads:
        thread.start()
    return threads


def check_rules(rules: Sequence[tuple[str, Any]]) -> None:
    """Raise :class:`~squall.errors.UsageError` for any rule its trigger refuses; nothing is started."""
    from squall.triggers.registry import TRIGGERS

    for name, rule in rules:
        TRIGGERS.load(name).check(rule)
