"""``squall watch``: one job per new file, each run in this process to the end, one after another."""

from __future__ import annotations

import threading
from typing import Callable

from squall.spec import JobSpec, default_state_dir
from squall.store import JobStore
from squall.triggers.rules import WatchRule
from squall.triggers.seen import SeenRecord
from squall.errors import JobCancelled
from squall.states import ACTIVE_STATES, JobState

Done = Callable[[str, str, str | None, int | None], None]
"""Told (file, job id, end state, rows read) after each file's job."""


def run_in_process(spec: JobSpec) -> tuple[str, int]:
    """Run ``spec``'s job here, or finish it if a crash left it unfinished; its end state and rows read.

    The job id is the trigger's deterministic one, so a job that already exists
    is this file's job from before a crash or a stop: a finished one is taken
    as it ended, an unfinished or interrupted (``CANCELLED``) one is resumed,
    committed parts kept. Only rows the seen record holds as ``claimed`` get
    here twice, so a job cancelled on purpose (recorded ``CANCELLED``) is not
    resumed behind the user's back.
    """
    from squall import api

    assert spec.job_id is not None
    with JobStore(spec.resolved_state_dir()) as store:
        existing = store.job(spec.job_id) if store.has_job(spec.job_id) else None
    try:
        if existing is None:
            result = api.run(spec, job_id=spec.job_id)
        elif JobState(existing.state) in (*ACTIVE_STATES, JobState.CANCELLED):  # cut short by a crash, or by stopping squall watch
            result = api.resume(spec.job_id, spec.state_dir, storage_options=api.options_given(spec))
        else:
            return existing.state, api.status(spec.job_id, spec.state_dir).counts.rows_in
    except JobCancelled:  # `squall cancel JOB_ID`: recorded as cancelled; `squall resume JOB_ID` finishes it
        return JobState.CANCELLED, api.status(spec.job_id, spec.state_dir).counts.rows_in
    return result.state, result.rows_in


def watch(rule: WatchRule, stop: threading.Event, once: bool = False, done: Done | None = None) -> int:
    """Run one job per new file of ``rule`` until ``stop`` is set (or, with ``once``, until none is left); the jobs run.

    Files are remembered in ``<state_dir>/triggers.db`` (the template's
    ``state_dir``, else ``$SQUALL_HOME``), so a restart skips what was done
    and finishes a job a crash interrupted.
    """
    from squall.triggers.file_arrival import FileTrigger, LocalLister, lister_for, poll_forever, poll_until_settled, watch_local

    rows: dict[str, int] = {}
    count = [0]

    def runner(spec: JobSpec) -> str:
        state, rows[str(spec.job_id)] = run_in_process(spec)
        return state

    def report(key: str, job_id: str, result: str | None) -> None:
        count[0] += 1
        if done:
            done(key, job_id, result, rows.get(job_id))

    lister = lister_for(rule)
    seen = SeenRecord(default_state_dir(rule.template.get("state_dir")))
    try:
        trigger = FileTrigger(rule, lister, seen, runner, report=report)
        if isinstance(lister, LocalLister):
            watch_local(trigger, stop, once)
        elif once:
            trigger.recover()
            poll_until_settled(trigger, stop)
        else:
            poll_forever(trigger, stop)
    finally:
        seen.close()
    return count[0]
