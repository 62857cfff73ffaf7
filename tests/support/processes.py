"""Processes a backend runs, as the operating system sees them (psutil): whether one still runs, and which are squall's."""

from __future__ import annotations

import psutil


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie has ended: it only waits to be reaped)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def local_backend_processes() -> set[int]:
    """The local backend's live processes under this one: spawned workers, the fork server and the workers it forked
    (a forked worker keeps the fork server's command line)."""
    found = set()
    for process in psutil.Process().children(recursive=True):
        try:
            if "squall.backends.local" in " ".join(process.cmdline()) and process.status() != psutil.STATUS_ZOMBIE:
                found.add(process.pid)
        except psutil.Error:
            continue
    return found


def ray_actor_processes() -> set[int]:
    """Processes running squall's Ray worker actors, on this machine."""
    found = set()
    for process in psutil.process_iter(["pid", "cmdline"]):
        if " ".join(process.info["cmdline"] or []).startswith("ray::ActorWorker"):
            found.add(process.info["pid"])
    return found
