"""The warm pool ("provisioned concurrency"): workers of configured models that stay loaded between jobs.

For each model named in ``warm_workers`` the pool starts local backends with
that many workers in all when the service starts (one backend, or one per
``warm_workers_per_job`` workers), and waits until every worker has loaded
the model. A job whose model and worker settings match,
and that was granted at least that many workers, borrows the backend
(:meth:`WarmPool.borrow`): ``squall.api.run`` configures it with the job's
task as usual, and its ``shutdown`` hands it back instead of killing the
workers. So the job pays no cold start, and its record counts only the
starts that happened while it held the backend. A backend handed back with
a worker still busy (the job was cancelled mid-invocation) is shut down and
a fresh one warmed in its place. So is one that started a worker while it was
lent (a crash, a timeout, recycling): a worker process dies with the thread
that started it (``PR_SET_PDEATHSIG`` follows the thread), and that thread
was the job's, which has ended. For the same reason the pool's own workers
are started from threads that live as long as the pool.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from squall.resolve import backend_for, model_ref
from squall.backends.base import Backend, WorkerEvent, WorkerLoadFailed, WorkerReady
from squall.models.base import ModelRef
from squall.owner_only import private_dir
from squall.plan.chunk import Chunk
from squall.runtime.task import JobTask
from squall.spec import JobSpec

WARM_UP_TIMEOUT_S = 300.0
_log = logging.getLogger("squall.service")


def backend_key(spec: JobSpec) -> str:
    """What must match for a job to run on a backend started for another: the model and the worker settings."""
    settings = [spec.backend, asdict(model_ref(spec)), spec.workers, spec.resolved_threads(), spec.batch_format, spec.memory,
                spec.max_invocations_per_worker, spec.recycle_rss_mb, spec.fork, spec.gpus]
    return json.dumps(settings, sort_keys=True, default=str)


@dataclass
class _Warm:
    model: str
    workers: int
    key: str
    backend: Backend
    ready: bool = False
    lent: bool = False
    error: str | None = None
    ready_at: float | None = None


class LentBackend:
    """A warm backend lent to one job: starting is a no-op, shutting down hands it back to the pool."""

    def __init__(self, pool: WarmPool, warm: _Warm) -> None:
        self._pool = pool
        self._warm = warm
        self._inner = warm.backend
        self._cold_base = self._inner.cold_starts()
        self._starts_base = self._inner.worker_starts()
        self._configured = False

    def start(self, model: ModelRef, workers: int) -> None:
        """Nothing to start: the workers are loaded (the pool matched the model and worker count)."""

    def configure(self, task: JobTask) -> None:
        """Give the job's task to every warm worker."""
        self._configured = True
        self._inner.configure(task)

    def check_reach(self, files: Sequence[tuple[str, int | None]], output: str) -> None:
        """Whatever the warm workers' backend checks."""
        self._inner.check_reach(files, output)

    def scale(self, waiting: int) -> None:
        """The warm pool keeps its size."""

    def idle(self) -> list[int]:
        """Warm workers ready and not running an invocation."""
        return self._inner.idle()

    def submit(self, worker: int, chunk: Chunk, attempt: int, output_schema: str | None = None) -> None:
        """Hand a chunk to an idle warm worker."""
        self._inner.submit(worker, chunk, attempt, output_schema)

    def wait(self, timeout: float) -> list[WorkerEvent]:
        """Events of the warm workers."""
        return self._inner.wait(timeout)

    def kill(self, worker: int) -> None:
        """Kill a warm worker; a fresh one takes its place (a cold start this job pays)."""
        self._inner.kill(worker)

    def cold_starts(self) -> int:
        """Model loads since the job borrowed the backend."""
        return self._inner.cold_starts() - self._cold_base

    def worker_starts(self) -> int:
        """Worker starts since the job borrowed the backend."""
        return self._inner.worker_starts() - self._starts_base

    def shutdown(self) -> None:
        """Hand the backend back to the pool (the workers stay loaded)."""
        self._pool.give_back(self._warm, self._configured, self.worker_starts() > 0)


class WarmPool:
    """Warm backends for the models in ``warm_workers`` (see the module docstring)."""

    def __init__(
        self, warm_workers: dict[str, int], log_root: Path, per_job: int | None = None, threads_per_worker: int = 1
    ) -> None:
        self._wanted = dict(warm_workers)
        self._per_job = per_job
        self._threads_per_worker = threads_per_worker
        self._log_root = log_root
        self._lock = threading.Lock()
        self._entries: list[_Warm] = []
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._stopped = threading.Event()

    def start(self) -> None:
        """Start warming every configured model in the background."""
        for model, workers in self._wanted.items():
            step = self._per_job or workers
            for first in range(0, workers, step):
                self._warm_up(model, min(step, workers - first))

    def borrow(self, spec: JobSpec, granted: int) -> tuple[Backend, int] | None:
        """A ready warm backend for ``spec`` with at most ``granted`` workers, and its worker count; None if none fits."""
        with self._lock:
            for warm in sorted(self._entries, key=lambda w: -w.workers):
                if warm.ready and not warm.lent and warm.workers <= granted:
                    if backend_key(spec.model_copy(update={"workers": warm.workers})) == warm.key:
                        warm.lent = True
                        return LentBackend(self, warm), warm.workers
        return None

    def give_back(self, warm: _Warm, used: bool, restarted: bool = False) -> None:
        """Take back a lent backend; one with a busy or missing worker, or one that started a worker while
        lent (that worker dies with the job's thread, see the module docstring), is replaced by a fresh one."""
        healthy = not restarted and (not used or len(warm.backend.idle()) == warm.workers)
        with self._lock:
            warm.lent = False
            if healthy and not self._closed:
                return
            if warm in self._entries:
                self._entries.remove(warm)
        warm.backend.shutdown()
        if not self._closed:
            self._warm_up(warm.model, warm.workers)

    def status(self) -> list[dict[str, object]]:
        """Each warm backend: model, workers, whether ready and whether lent."""
        with self._lock:
            return [{"model": w.model, "workers": w.workers, "ready": w.ready, "lent": w.lent, "error": w.error}
                    for w in self._entries]

    def wait_ready(self, timeout: float) -> bool:
        """Wait until every warm backend is ready (or failed); True if all are ready."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if all(w.ready or w.error for w in self._entries):
                    return all(w.ready for w in self._entries)
            time.sleep(0.05)
        return False

    def shutdown(self) -> None:
        """Stop every warm worker."""
        with self._lock:
            self._closed = True
            entries, self._entries = self._entries, []
        for warm in entries:
            warm.backend.shutdown()
        self._stopped.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def _warm_up(self, model: str, workers: int) -> None:
        spec = JobSpec(model=model, input=["-"], output="-", workers=workers, threads_per_worker=self._threads_per_worker)
        backend = backend_for(spec, private_dir(private_dir(self._log_root) / f"warm-{len(self._threads)}"))
        warm = _Warm(model, workers, backend_key(spec), backend)
        with self._lock:
            self._entries.append(warm)
        thread = threading.Thread(target=self._load, args=(warm, spec), name=f"warm-{model}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _load(self, warm: _Warm, spec: JobSpec) -> None:
        ready: set[int] = set()
        deadline = time.monotonic() + WARM_UP_TIMEOUT_S
        try:
            warm.backend.start(model_ref(spec), warm.workers)
            while len(ready) < warm.workers and time.monotonic() < deadline and not self._closed:
                for event in warm.backend.wait(0.2):
                    if isinstance(event, WorkerReady):
                        ready.add(event.worker)
                    elif isinstance(event, WorkerLoadFailed):
                        raise RuntimeError(str(event.error))
        except Exception as exc:  # the model cannot be warmed: jobs run cold, the reason is shown in /healthz
            _log.warning("warm pool for %s failed: %s", warm.model, exc)
            warm.error = f"{type(exc).__name__}: {exc}"
            warm.backend.shutdown()
            return
        with self._lock:
            warm.ready = len(ready) == warm.workers
            warm.ready_at = time.time()
            if not warm.ready:
                warm.error = f"the workers did not load {warm.model} within {WARM_UP_TIMEOUT_S:.0f} s"
        # Worker processes die with the thread that started them (PR_SET_PDEATHSIG follows the thread, not
        # the process), so this thread lives as long as the pool.
        self._stopped.wait()
