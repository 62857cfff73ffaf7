"""The process environment a worker runs in, whichever backend starts it.

BLAS/OpenMP pools size themselves from these variables when numpy, sklearn
or torch are first imported, so they are set before a worker imports
anything: workers × threads must fit the cores, or the processes fight for
them. Arrow's jemalloc is told not to start its background thread, which
would make forking the model-holding process unsafe.
"""

from __future__ import annotations

import os
from typing import Mapping

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


def thread_caps(threads: int) -> dict[str, str]:
    """The variables that cap every BLAS/OpenMP pool at ``threads`` threads."""
    return {name: str(threads) for name in THREAD_VARIABLES}


def worker_environment(threads: int, extra: Mapping[str, str] | None = None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a worker process started from this one: ``base`` (default this process's) with
    the thread caps, jemalloc without its background thread, this directory first on ``PYTHONPATH`` (so
    user code named ``module:attr`` imports as it does here), and ``extra``."""
    env = dict(os.environ if base is None else base)
    env.update(thread_caps(threads))
    env.setdefault("JE_ARROW_MALLOC_CONF", "background_thread:false")
    path = [os.getcwd(), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(path)
    env.update(extra or {})
    return env


def cap_threads_here(threads: int) -> None:
    """Cap this process's own pools (a worker that lives in a process someone else started, such as a Ray
    actor); effective for the libraries it has not imported yet."""
    os.environ.update(thread_caps(threads))
