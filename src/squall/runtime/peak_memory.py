"""The peak resident memory of this process over one invocation: a function platform's "Max Memory Used".

On Linux the kernel's high-water mark (``VmHWM``) is reset at the start of
each invocation by writing ``5`` to ``/proc/self/clear_refs``, so each
invocation reports its own peak, not the worker's lifetime peak. Elsewhere
(or where that file cannot be written) the lifetime peak from ``getrusage``
is reported, which can only be higher.
"""

from __future__ import annotations

import resource

_CLEAR_REFS = "/proc/self/clear_refs"
_STATUS = "/proc/self/status"


def reset_peak() -> None:
    """Start measuring a new peak from the memory in use now."""
    try:
        with open(_CLEAR_REFS, "w") as handle:
            handle.write("5")
    except OSError:
        pass  # not Linux, or not allowed: peak_mb() falls back to the lifetime peak


def peak_mb() -> float:
    """The highest resident memory of this process, in MiB, since the last :func:`reset_peak`."""
    try:
        with open(_STATUS, "rb") as handle:
            status = handle.read()
    except OSError:
        status = b""
    at = status.find(b"VmHWM:")
    if at >= 0:
        return int(status[at + 6 : status.index(b"\n", at)].split()[0]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def tree_rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` and its descendants now, in MiB (0 if it is gone)."""
    import psutil

    try:
        process = psutil.Process(pid)
        members = [process, *process.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0
    for member in members:
        try:
            total += member.memory_info().rss
        except psutil.Error:
            continue
    return total / (1024 * 1024)
