"""The local backend: long-lived worker processes on this machine, spoken to over pipes.

Each worker is a ``python -m squall.runtime.worker`` process in its own
process group, with BLAS/OpenMP threads capped so that workers × threads
fits the cores. Killing a worker kills its whole group with SIGKILL; a fresh
worker takes its place. Worker output goes to ``worker-N.log`` in the job's
state folder.

The memory limit is a watchdog, not ``RLIMIT_AS``: the address-space limit
counts virtual memory, which numpy, Arrow and OpenBLAS reserve far beyond what
they touch, so it kills healthy workers; and it turns overuse into a
``MemoryError`` that user code may swallow. The watchdog sums the resident
memory of a busy worker and its children every 100 ms and kills the group
over the limit; an allocation faster than that can overshoot briefly.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from squall.backends.base import InvocationDone, WorkerDied, WorkerEvent, WorkerLoadFailed, WorkerReady
from squall.errors import ErrorInfo
from squall.models.base import ModelRef
from squall.plan.chunk import Chunk
from squall.runtime import wire
from squall.runtime.task import InvocationReport, JobTask

MEMORY_CHECK_S = 0.1
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


@dataclass(frozen=True)
class WorkerRecycling:
    """When workers are replaced: over ``memory_mb`` while busy (a kill, the attempt fails), or
    after ``max_invocations`` or above ``rss_mb`` between invocations (a planned restart)."""

    memory_mb: int | None = None
    max_invocations: int | None = None
    rss_mb: int | None = None


def _tree_rss_mb(pid: int) -> float:
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


@dataclass
class _Slot:
    index: int
    process: subprocess.Popen[bytes]
    to_worker: int
    from_worker: int
    buffer: wire.FrameBuffer = field(default_factory=wire.FrameBuffer)
    ready: bool = False
    busy: bool = False
    invocations: int = 0


class LocalBackend:
    """Worker processes on this machine (see the module docstring)."""

    def __init__(
        self,
        log_dir: Path,
        threads_per_worker: int = 1,
        batch_format: str = "pandas",
        recycling: WorkerRecycling | None = None,
    ) -> None:
        self._log_dir = log_dir
        self._threads = threads_per_worker
        self._batch_format = batch_format
        self._recycling = recycling or WorkerRecycling()
        self._last_memory_check = 0.0
        self._slots: dict[int, _Slot] = {}
        self._selector = selectors.DefaultSelector()
        self._model: ModelRef | None = None
        self._task: JobTask | None = None
        self._started = 0
        self._closed = False

    def start(self, model: ModelRef, workers: int) -> None:
        self._model = model
        self._log_dir.mkdir(parents=True, exist_ok=True)
        for index in range(workers):
            self._spawn(index)

    def configure(self, task: JobTask) -> None:
        self._task = task
        for slot in list(self._slots.values()):
            self._send(slot, {"type": "task", "task": task.to_json()})

    def idle(self) -> list[int]:
        if self._task is None:
            return []
        return [slot.index for slot in self._slots.values() if slot.ready and not slot.busy]

    def submit(self, worker: int, chunk: Chunk, attempt: int) -> None:
        slot = self._slots[worker]
        slot.busy = True
        self._send(slot, {"type": "invoke", "chunk": chunk.to_json(), "attempt": attempt})

    def _send(self, slot: _Slot, message: dict) -> None:
        try:
            wire.send(slot.to_worker, message)
        except OSError:
            pass  # the worker is gone; its end-of-stream arrives through wait()

    def wait(self, timeout: float) -> list[WorkerEvent]:
        if self._recycling.memory_mb is not None:
            timeout = min(timeout, MEMORY_CHECK_S)
        events: list[WorkerEvent] = []
        for key, _ in self._selector.select(timeout=max(0.0, timeout)):
            slot = self._slots.get(key.data)
            if slot is None or slot.from_worker != key.fd:
                continue
            events.extend(self._drain(slot))
        events.extend(self._enforce_memory())
        return events

    def _enforce_memory(self) -> list[WorkerEvent]:
        limit = self._recycling.memory_mb
        now = time.monotonic()
        if limit is None or now - self._last_memory_check < MEMORY_CHECK_S:
            return []
        self._last_memory_check = now
        events: list[WorkerEvent] = []
        for slot in [s for s in self._slots.values() if s.busy]:
            used = _tree_rss_mb(slot.process.pid)
            if used > limit:
                events.append(WorkerDied(slot.index, f"the worker used {used:.0f} MB, over the {limit} MB memory limit", "memory"))
                self.kill(slot.index)
        return events

    def kill(self, worker: int) -> None:
        slot = self._slots.get(worker)
        if slot is not None:
            self._retire(slot)
            self._spawn(worker)

    def cold_starts(self) -> int:
        return self._started

    def pids(self) -> dict[int, int]:
        """Process id of each worker, by worker index."""
        return {index: slot.process.pid for index, slot in self._slots.items()}

    def shutdown(self) -> None:
        """Kill every worker at once: between invocations they hold nothing worth a graceful exit."""
        if self._closed:
            return
        self._closed = True
        for slot in list(self._slots.values()):
            self._retire(slot)
        self._selector.close()

    def _spawn(self, index: int) -> None:
        spawned_at = time.time()
        parent_read, child_write = os.pipe()
        child_read, parent_write = os.pipe()
        log = open(self._log_dir / f"worker-{index}.log", "ab")
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "squall.runtime.worker", str(child_read), str(child_write)],
                pass_fds=(child_read, child_write),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._environment(),
                start_new_session=True,
            )
        finally:
            log.close()
            os.close(child_read)
            os.close(child_write)
        os.set_blocking(parent_read, False)
        slot = _Slot(index, process, parent_write, parent_read)
        self._slots[index] = slot
        self._selector.register(parent_read, selectors.EVENT_READ, index)
        self._started += 1
        assert self._model is not None
        self._send(slot, {"type": "init", "worker": index, "model": asdict(self._model), "batch_format": self._batch_format,
                          "spawned_at": spawned_at})
        if self._task is not None:
            self._send(slot, {"type": "task", "task": self._task.to_json()})

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        for name in THREAD_VARIABLES:
            env[name] = str(self._threads)
        path = [os.getcwd(), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
        env["PYTHONPATH"] = os.pathsep.join(path)
        return env

    def _drain(self, slot: _Slot) -> list[WorkerEvent]:
        events: list[WorkerEvent] = []
        while True:
            try:
                data = os.read(slot.from_worker, 1 << 16)
            except BlockingIOError:
                break
            if not data:
                events.append(WorkerDied(slot.index, self._death_reason(slot)))
                self._retire(slot)
                self._spawn(slot.index)
                return events
            events.extend(self._event(slot, message) for message in slot.buffer.feed(data))
        if any(isinstance(event, InvocationDone) for event in events):
            self._recycle_if_due(slot)
        return events

    def _event(self, slot: _Slot, message: dict) -> WorkerEvent:
        kind = message["type"]
        if kind == "ready":
            slot.ready = True
            return WorkerReady(slot.index, float(message["init_s"]))
        if kind == "load_failed":
            return WorkerLoadFailed(slot.index, ErrorInfo(**message["error"]))
        slot.busy = False
        slot.invocations += 1
        return InvocationDone(slot.index, InvocationReport.from_dict(message["report"]))

    def _recycle_if_due(self, slot: _Slot) -> None:
        """Replace a worker that served its quota of invocations or grew past the RSS threshold (leaks)."""
        policy = self._recycling
        due = policy.max_invocations is not None and slot.invocations >= policy.max_invocations
        if not due and policy.rss_mb is not None:
            due = _tree_rss_mb(slot.process.pid) > policy.rss_mb
        if due:
            self.kill(slot.index)

    def _death_reason(self, slot: _Slot) -> str:
        try:
            code = slot.process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return "the worker closed its pipe but did not exit"
        if code < 0:
            return f"the worker was killed by {signal.Signals(-code).name}"
        return f"the worker exited with code {code}"

    def _retire(self, slot: _Slot) -> None:
        self._slots.pop(slot.index, None)
        try:
            self._selector.unregister(slot.from_worker)
        except (KeyError, ValueError):
            pass
        try:
            os.killpg(slot.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        slot.process.wait()
        for fd in (slot.to_worker, slot.from_worker):
            try:
                os.close(fd)
            except OSError:
                pass
