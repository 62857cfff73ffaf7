"""The scheduler: admits queued jobs into the service's worker pool and runs each in a thread.

Limits, as a function platform's account has them:

- ``max_concurrency`` workers busy at once across all jobs. A job is given
  ``min(spec.workers, free workers)`` workers (at least one), so the sum over
  running jobs never exceeds the limit; a job lent a warm backend gets that
  backend's worker count instead (never more than it was granted).
- ``max_running_jobs`` jobs at once.

Requests are admitted strictly in order (priority first, then arrival): a
request that does not fit waits at the head of the queue and those behind it
wait too, visibly (``QUEUED`` with a queue position). Each admitted request
runs ``squall.api.run`` (or ``resume``/``redrive``) in its own thread; the
coordinator in that thread is the job's only writer, as with the CLI. A job
that leaves ``threads_per_worker`` unset gets ``cores // max_concurrency``
BLAS threads per worker, so that a full pool fits the cores.

A submitted spec is queued without its secrets (:mod:`squall.secrets`); the
scheduler keeps the spec as it was given in memory and runs the job from
that. A job queued by a service that has since restarted gets its secrets
from the environment, or ends ``FAILED`` naming each one missing.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Sequence

from squall import api
from squall.backends.base import Backend
from squall.errors import JobNotFoundError, JobStateError, SpecError, SquallError, UsageError
from squall.observe.events import JobListener
from squall.owner_only import open_private, private_dir
from squall.service.config import ServeConfig
from squall.service.queue import JobQueue, Submission
from squall.service.roots import AllowedRoots
from squall.service.warm import WarmPool
from squall.spec import JobSpec
from squall.store import JobStore
from squall.states import ChunkState, JobState, SubmissionState

_log = logging.getLogger("squall.service")
_POLL_S = 0.5


@dataclass(frozen=True)
class Running:
    """A job running in the pool: its request and the workers it was given."""

    submission: Submission
    workers: int
    warm: bool


class _Full(Exception):
    """The pool has no room for the request at the head of the queue."""


class _CancelOnStart(JobListener):
    """Asks the coordinator to stop as soon as it starts (the job was cancelled while it was being set up)."""

    def __init__(self, scheduler: Scheduler) -> None:
        self._scheduler = scheduler

    def job_started(self, job_id: str, chunks_total: int, chunks_done: int, est_rows: int) -> None:
        if self._scheduler.cancel_wanted(job_id):
            api.cancel(job_id, self._scheduler.state_dir)


class Scheduler:
    """The service's job queue and worker pool (see the module docstring)."""

    def __init__(self, config: ServeConfig, listeners: Sequence[JobListener] = ()) -> None:
        self._config = config
        self._roots = AllowedRoots(config.allowed_roots)
        self.state_dir: Path = config.resolved_state_dir()
        self.queue = JobQueue(self.state_dir)
        self.threads_per_worker = max(1, (os.cpu_count() or 1) // config.max_concurrency)
        self.pool = WarmPool(config.warm_workers, self.state_dir / "warm", config.warm_workers_per_job, self.threads_per_worker)
        self._listeners = [*listeners, _CancelOnStart(self)]
        self._cond = threading.Condition()
        self._running: dict[str, Running] = {}
        self._cancels: set[str] = set()
        self._given: dict[str, JobSpec] = {}  # specs as submitted here, secrets and all; never stored
        self._threads: dict[str, threading.Thread] = {}
        self._dispatcher: threading.Thread | None = None
        self._stopping = False
        self._service_lock: IO[str] | None = None
        self.peak_busy = 0

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Queue again what a stopped service left running, warm the pool, and start admitting.

        Raises :class:`UsageError` if another ``squall serve`` uses the same state folder (see :meth:`claim_state_dir`)."""
        if self._service_lock is None:
            self.claim_state_dir()
        with JobStore(self.state_dir) as store:
            for left in self.queue.admitted():
                self.queue.requeue(left.seq, "resume" if store.has_job(left.job_id) else "run")
        self.pool.start()
        self._dispatcher = threading.Thread(target=self._dispatch_loop, name="squall-scheduler", daemon=True)
        self._dispatcher.start()

    def stop(self, timeout: float = 60.0) -> None:
        """Stop admitting, cancel running jobs (they are queued again to resume at the next start), stop the pool."""
        with self._cond:
            self._stopping = True
            running = list(self._running)
            self._cond.notify_all()
        for job_id in running:
            self._cancel_running(job_id)
        for thread in list(self._threads.values()):
            thread.join(timeout)
        if self._dispatcher is not None:
            self._dispatcher.join(timeout)
        self.pool.shutdown()
        self.queue.close()
        if self._service_lock is not None:
            self._service_lock.close()  # closing the file releases its lock
            self._service_lock = None

    def claim_state_dir(self, address: str = "") -> None:
        """Become the one service of the state folder until :meth:`stop` (two dispatchers would both admit the same
        queued jobs); ``address`` is where this one listens, told to a second one that is refused.

        Raises :class:`UsageError` naming the folder and the service that holds it."""
        lock = private_dir(self.state_dir / "locks") / "service.lock"
        handle = open_private(lock, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise UsageError(
                f"the state folder {self.state_dir} is in use by a running squall serve ({holder}); stop that one, "
                "or give this one its own --state-dir"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}{f', listening on {address}' if address else ''}")
        handle.flush()
        self._service_lock = handle

    # --- requests --------------------------------------------------------------------------

    def submit(self, spec: JobSpec, priority: int = 0, source: str = "api") -> str:
        """Queue a new job and return its id (``spec.job_id``, or a fresh one); safe to call from any thread.

        Raises :class:`JobStateError` if a job with that id exists or is queued.
        """
        job_id = spec.job_id or api.new_job_id()
        stored = spec.model_copy(update={"job_id": job_id, "state_dir": str(self.state_dir)})  # queued without secrets
        try:
            JobSpec.model_validate_json(stored.to_json())  # what is queued must read back (JSON has no Infinity)
        except ValueError as exc:
            raise SpecError(f"the spec does not survive being stored as JSON ({exc}); use finite numbers") from None
        with self._cond:
            while not spec.job_id and self._known(job_id):
                job_id = api.new_job_id()
                stored = stored.model_copy(update={"job_id": job_id})
            if self._known(job_id):
                raise JobStateError(f"a job named {job_id!r} already exists; pick another job_id or resume it")
            self.queue.add(job_id, "run", stored.to_json(), priority, source)
            self._given[job_id] = stored
            self._cond.notify_all()
        return job_id

    def request(self, job_id: str, action: str, priority: int = 0, source: str = "api") -> None:
        """Queue ``resume`` or ``redrive`` of an existing job."""
        with JobStore(self.state_dir) as store:
            job = store.job(job_id)
            with self._cond:
                latest = self.queue.latest(job_id)
                if job_id in self._running or (latest and latest.state == SubmissionState.QUEUED) or store.is_running(job_id):
                    raise JobStateError(f"job {job_id} is queued or running already; wait for it or cancel it first")
                if action == "redrive" and store.counts(job_id).count(ChunkState.DEAD) == 0:
                    raise JobStateError(f"job {job_id} has no dead chunks to redrive")
                if action == "resume" and job.state == JobState.SUCCEEDED:
                    raise JobStateError(f"job {job_id} SUCCEEDED; there is nothing to resume")
                self.queue.add(job_id, action, None, priority, source)
                self._cond.notify_all()

    def cancel(self, job_id: str) -> str:
        """Cancel a queued or running job; returns the state it was in (``QUEUED`` or ``RUNNING``)."""
        with self._cond:
            latest = self.queue.latest(job_id)
            if latest is not None and latest.state == SubmissionState.QUEUED:
                self.queue.mark(latest.seq, SubmissionState.CANCELLED, "cancelled while queued")
                return SubmissionState.QUEUED
            if job_id not in self._running:
                raise JobStateError(f"job {job_id} is not queued or running in this service; there is nothing to cancel")
            self._cancels.add(job_id)
        self._cancel_running(job_id)
        return "RUNNING"

    def cancel_wanted(self, job_id: str) -> bool:
        """Whether ``job_id`` was cancelled while it was being set up."""
        with self._cond:
            return job_id in self._cancels or self._stopping

    # --- what is happening -----------------------------------------------------------------

    def running(self) -> dict[str, Running]:
        """Jobs running now, by id."""
        with self._cond:
            return dict(self._running)

    def busy_workers(self) -> int:
        """Workers given to running jobs now."""
        with self._cond:
            return sum(r.workers for r in self._running.values())

    def queue_positions(self) -> dict[str, int]:
        """Queued job ids and their place in the queue (1 is next)."""
        return {sub.job_id: place for place, sub in enumerate(self.queue.queued(), start=1)}

    # --- admitting and running -------------------------------------------------------------

    def _known(self, job_id: str) -> bool:
        latest = self.queue.latest(job_id)
        if latest is not None and latest.state not in (SubmissionState.CANCELLED, SubmissionState.REFUSED):
            return True
        with JobStore(self.state_dir) as store:
            return store.has_job(job_id)

    def _dispatch_loop(self) -> None:
        with self._cond:
            while not self._stopping:
                try:
                    self._admit()
                except Exception:  # never let one bad row stop the service
                    _log.exception("admitting jobs failed")
                self._cond.wait(_POLL_S)

    def _admit(self) -> None:
        for sub in self.queue.queued():
            try:
                self._admit_one(sub)
            except _Full:
                return
            except Exception as exc:  # a request that cannot even start must not block the queue behind it
                _log.exception("cannot start %s", sub.job_id)
                self.queue.mark(sub.seq, SubmissionState.REFUSED, f"{type(exc).__name__}: {exc}")

    def _admit_one(self, sub: Submission) -> None:
        """Start ``sub`` if it fits; raises :class:`_Full` if it does not (nothing behind it may start)."""
        busy = sum(r.workers for r in self._running.values())
        free = self._config.max_concurrency - busy
        if len(self._running) >= self._config.max_running_jobs or free <= 0:
            raise _Full()
        if sub.job_id in self._running:
            return  # a resume queued behind its own job waits for it, without holding up the rest
        granted = min(self._wanted(sub), free)
        backend: Backend | None = None
        if sub.action == "run" and sub.spec:
            lent = self.pool.borrow(self._job_spec(sub), granted)
            if lent is not None:
                backend, granted = lent
        self._running[sub.job_id] = Running(sub, granted, backend is not None)
        try:
            self.queue.mark(sub.seq, SubmissionState.ADMITTED, workers=granted)
            thread = threading.Thread(target=self._execute, args=(sub, granted, backend), name=f"job-{sub.job_id}",
                                      daemon=True)
            self._threads[sub.job_id] = thread
            thread.start()
        except BaseException:  # the workers it was granted must not stay counted as busy
            self._running.pop(sub.job_id, None)
            self._threads.pop(sub.job_id, None)
            if backend is not None:
                backend.shutdown()
            raise
        self.peak_busy = max(self.peak_busy, busy + granted)

    def _job_spec(self, sub: Submission) -> JobSpec:
        """The submitted spec (as given, when it was given to this process), with BLAS threads per worker set so that
        ``max_concurrency`` workers fit the cores."""
        assert sub.spec is not None
        spec = self._given.get(sub.job_id) or JobSpec.model_validate_json(sub.spec)
        if spec.threads_per_worker is None:
            spec = spec.model_copy(update={"threads_per_worker": self.threads_per_worker})
        return spec

    def _wanted(self, sub: Submission) -> int:
        if sub.spec:
            return JobSpec.model_validate_json(sub.spec).workers
        with JobStore(self.state_dir) as store:
            return int(store.job(sub.job_id).spec.get("workers") or 1)

    def _execute(self, sub: Submission, workers: int, backend: Backend | None) -> None:
        state, message = SubmissionState.DONE, None
        try:
            self._perform(sub, workers, backend)
        except SquallError as exc:
            state, message = (SubmissionState.DONE if self._engine_has(sub.job_id) else SubmissionState.REFUSED), str(exc)
        except Exception as exc:  # a bug must not take the pool down; it is shown on the job
            _log.exception("job %s failed", sub.job_id)
            state, message = (SubmissionState.DONE if self._engine_has(sub.job_id) else SubmissionState.REFUSED), f"{type(exc).__name__}: {exc}"
        with self._cond:
            try:
                if self._stopping and self._engine_has(sub.job_id) and sub.job_id not in self._cancels:
                    self.queue.requeue(sub.seq, "resume")  # the service stopped it; the next start finishes it
                else:
                    self.queue.mark(sub.seq, state, message)
            finally:  # its workers are free whatever the queue could record
                self._running.pop(sub.job_id, None)
                self._threads.pop(sub.job_id, None)
                self._cancels.discard(sub.job_id)
                self._cond.notify_all()

    def _perform(self, sub: Submission, workers: int, backend: Backend | None) -> None:
        if sub.action == "run":
            assert sub.spec is not None
            # A Ray pool may not grow past the workers granted: they are what the account-wide limit left.
            spec = _capped(self._job_spec(sub), workers)
            # Checked again now: a symlink made while the job waited in the queue must not lead it out.
            self._roots.check_spec(spec)
            api.run(spec, listeners=self._listeners, job_id=sub.job_id, backend=backend)
        elif sub.action == "redrive":
            api.redrive(sub.job_id, state_dir=self.state_dir, overrides={"workers": workers}, listeners=self._listeners,
                        storage_options=self._options_given(sub.job_id))
        else:
            self._set_workers(sub.job_id, workers)
            api.resume(sub.job_id, self.state_dir, self._listeners, storage_options=self._options_given(sub.job_id))

    def _options_given(self, job_id: str) -> dict[str, Any] | None:
        """The storage options the job was submitted with here, which its store does not hold."""
        given = self._given.get(job_id)
        return api.options_given(given) if given is not None else None

    def _set_workers(self, job_id: str, workers: int) -> None:
        with JobStore(self.state_dir) as store:
            spec = JobSpec.model_validate(store.job(job_id).spec)
            store.update_spec(job_id, spec.model_copy(update={"workers": workers}).to_json())

    def _engine_has(self, job_id: str) -> bool:
        with JobStore(self.state_dir) as store:
            return store.has_job(job_id)

    def _cancel_running(self, job_id: str) -> None:
        try:
            api.cancel(job_id, self.state_dir)
        except (JobNotFoundError, JobStateError):
            pass  # not in the store yet (or already ending): _CancelOnStart stops it when it starts


def _capped(spec: JobSpec, workers: int) -> JobSpec:
    """``spec`` with ``workers`` workers and a pool that may not grow past them: they are what the account-wide
    limit left (a Ray pool's ``max_workers`` goes)."""
    capped = spec.backend_settings().capped(workers).model_dump(exclude_unset=True)
    options = {**spec.backend_options, spec.backend: capped}
    return JobSpec.model_validate({**spec.model_dump(exclude_unset=True), "workers": workers, "backend_options": options})
