"""File arrival in a local folder: one job per new file, once its size has settled.

The folder is *listed* on start (files that arrived while squall was down are
found) and again whenever the watcher (watchfiles, inotify on Linux) reports a
change, or every ``poll_s`` while a file is still settling. A file counts once
its size and mtime were the same on listings at least ``settle_s`` apart;
names matching the rule's ``ignore`` globs (``*.tmp``, ``.*``, ``*.part``,
``*.crdownload``...) never count, so a file written under a temporary name and
renamed into place counts once, under its final name. What was started is in
the seen record (:mod:`squall.triggers.seen`); a name is processed once.
"""

from __future__ import annotations

import fnmatch
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable

from squall.errors import UsageError
from squall.triggers.listing import Listed, Lister, counts
from squall.triggers.handover import Report, Runner, hand_over, no_report, recover
from squall.triggers.rules import WatchRule
from squall.triggers.seen import SeenRecord
from squall.triggers.template import file_job_id, file_spec


class LocalLister:
    """The files of a local folder (and its sub-folders when ``recursive``)."""

    def __init__(self, rule: WatchRule) -> None:
        self.rule = rule
        self.root = Path(rule.location).expanduser()
        if not self.root.is_dir():
            raise UsageError(f"cannot watch {rule.location}: no such folder; create it (mkdir -p) or give an existing folder or a URL")
        self.root = self.root.resolve()

    def list(self) -> list[Listed]:
        found = []
        paths = self.root.rglob("*") if self.rule.recursive else self.root.iterdir()
        for path in paths:
            relative = path.relative_to(self.root).parts
            if any(fnmatch.fnmatch(part, glob) for part in relative[:-1] for glob in self.rule.ignore):
                continue
            try:
                info = path.stat()
            except FileNotFoundError:  # renamed or removed while listing
                continue
            if path.is_file() and counts(self.rule, path.name):
                found.append(Listed(str(path), info.st_size, info.st_mtime))
        return sorted(found, key=lambda item: item.uri)


def lister_for(rule: WatchRule) -> Lister:
    """A local folder's lister, or an object-store prefix's; a missing local folder is a UsageError."""
    from squall.io.storage import is_remote

    if is_remote(rule.location):
        from squall.triggers.object_prefix import PrefixLister

        return PrefixLister(rule)
    return LocalLister(rule)


def check_template(rule: WatchRule) -> None:
    """Refuse, with a SpecError naming the field, a template that would not make a valid spec for a file."""
    file_spec(rule.template, rule.location.rstrip("/") + "/example.parquet", datetime.now(timezone.utc), "template-check")


class Settler:
    """Which files are ready: seen with the same size/mtime/etag on two listings at least ``settle_s`` apart."""

    def __init__(self, settle_s: float) -> None:
        self.settle_s = settle_s
        self._since: dict[str, tuple[tuple[int, float | None, str | None], float]] = {}

    def ready(self, listed: Iterable[Listed], now: float) -> list[Listed]:
        ready, current = [], {}
        for item in listed:
            before = self._since.get(item.uri)
            if before is None or before[0] != item.signature():
                current[item.uri] = (item.signature(), now)
                continue
            current[item.uri] = before
            if now - before[1] >= self.settle_s:
                ready.append(item)
        self._since = current
        return ready


class FileTrigger:
    """One watch rule: claims each settled new file in the seen record, then hands its job over."""

    def __init__(self, rule: WatchRule, lister: Lister, seen: SeenRecord, runner: Runner,
                 clock: Callable[[], float] = time.time, report: Report = no_report) -> None:
        self.rule, self.lister, self.seen, self.runner, self.clock, self.report = rule, lister, seen, runner, clock, report
        self.settler = Settler(rule.settle_s)
        self.rule_id = rule.rule_id()
        check_template(rule)

    def recover(self) -> None:
        """Hand over again, with the same job id, every job claimed before a crash but maybe never handed over."""
        recover(self.seen, self.rule_id, self.runner, self.report, self.rule.template)

    def poll(self) -> int:
        """List once; start a job for each new settled file. Returns how many new files are still settling."""
        known = self.seen.known(self.rule_id)
        fresh = [item for item in self.lister.list() if item.uri not in known]
        ready = self.settler.ready(fresh, self.clock())
        for item in ready:
            job_id = file_job_id(self.rule_id, item.uri)
            arrived = datetime.fromtimestamp(item.mtime or self.clock(), timezone.utc)
            spec = file_spec(self.rule.template, item.uri, arrived, job_id)
            if self.seen.claim(self.rule_id, item.uri, job_id, spec.to_json(), item.size, item.mtime, item.etag):
                hand_over(self.seen, self.rule_id, item.uri, job_id, spec, self.runner, self.report)
        return len(fresh) - len(ready)


def watch_local(trigger: FileTrigger, stop: threading.Event, once: bool = False) -> None:
    """Run ``trigger`` on a local folder until ``stop`` is set (or, with ``once``, until nothing is left settling)."""
    trigger.recover()
    if once:
        poll_until_settled(trigger, stop)
        return
    import watchfiles

    assert isinstance(trigger.lister, LocalLister)
    trigger.poll()
    step = int(trigger.rule.poll_s * 1000)
    for _ in watchfiles.watch(trigger.lister.root, stop_event=stop, yield_on_timeout=True, rust_timeout=step,
                              debounce=step, recursive=trigger.rule.recursive, raise_interrupt=False):
        trigger.poll()


def poll_until_settled(trigger: FileTrigger, stop: threading.Event) -> None:
    """List every ``poll_s`` until no new file is left settling."""
    while trigger.poll() > 0 and not stop.wait(trigger.rule.poll_s):
        pass


def poll_forever(trigger: FileTrigger, stop: threading.Event) -> None:
    """List every ``poll_s`` until ``stop`` is set (object stores, which have no change events)."""
    trigger.recover()
    while not stop.is_set():
        trigger.poll()
        stop.wait(trigger.rule.poll_s)
