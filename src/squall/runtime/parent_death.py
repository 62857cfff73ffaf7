"""A worker process that does not outlive the process that started it, whichever backend started it."""

from __future__ import annotations

import os
import sys


def die_with_parent(parent: int | None = None) -> None:
    """On Linux, have the kernel kill this process when its parent dies, so no orphan writes late files.

    ``parent`` (default: ``$SQUALL_PARENT_PID``) is the pid the parent had; if
    it is already gone, exit now. Comparing with that pid, not with 1, keeps a
    coordinator that is itself pid 1 (a container's entry point) working.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import resource
    import signal

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crashing model must not fill the disk with cores
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    expected = parent or int(os.environ.get("SQUALL_PARENT_PID", "0"))
    if expected and os.getppid() != expected:
        os._exit(0)
