"""The local backend: long-lived worker processes on this machine, spoken to over pipes.

Workers are forked warm from a fork server that loaded the model once
(:mod:`squall.backends.local.zygote`); where forking is unsafe (a model that starts
threads when it loads, or ``fork = false``) each worker is started from
scratch and loads the model itself. Every worker runs in its own process
group with BLAS/OpenMP threads capped so that workers × threads fits the
cores. Killing a worker kills its whole group with SIGKILL; a fresh worker
takes its place. Worker output goes to ``worker-N.log`` (and ``zygote.log``)
in the job's state folder.

The memory limit is a watchdog, not ``RLIMIT_AS``: the address-space limit
counts virtual memory, which numpy, Arrow and OpenBLAS reserve far beyond what
they touch, so it kills healthy workers; and it turns overuse into a
``MemoryError`` that user code may swallow. The watchdog sums the resident
memory of a busy worker and its children every 100 ms and kills the group
over the limit; an allocation faster than that can overshoot briefly.

A worker's death is reported once its exit status is known: its pipe closes
as it exits, and the status follows (from the fork server, or from waiting
on the process) a moment later. Until then the worker is *ending*: it takes
no work and keeps its index, so its death and its successor's start reach
the coordinator in that order. A worker that closed its pipe but does not
exit within ``EXIT_WAIT_S`` is killed and reported as such.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from squall.backends.base import BackendOptions, InvocationDone, WorkerDied, WorkerEvent, WorkerLoadFailed, WorkerReady, WorkerRecycling
from squall.backends.local import wire
from squall.backends.local.launch import ForkServer, start_process
from squall.models.base import ModelRef
from squall.plan.chunk import Chunk
from squall.runtime.environment import worker_environment
from squall.runtime.messages import (
    Configure, Forked, Gone, Invoke, Load, LoadFailed, Message, Ready, Reported, ToWorker, Unforkable,
)
from squall.runtime.peak_memory import tree_rss_mb
from squall.runtime.task import JobTask

if TYPE_CHECKING:
    from squall.spec import JobSpec

MEMORY_CHECK_S = 0.1
EXIT_WAIT_S = 10.0
EXIT_POLL_S = 0.05


@dataclass
class _Slot:
    index: int
    to_worker: int
    from_worker: int
    pid: int | None = None
    process: subprocess.Popen[bytes] | None = None
    request: int | None = None  # the fork request that made it, when the fork server did
    buffer: wire.FrameBuffer = field(default_factory=wire.FrameBuffer)
    ready: bool = False
    busy: bool = False
    invocations: int = 0
    closed_at: float | None = None  # when its pipe closed: it is ending, its exit status not known yet


_ZYGOTE = "zygote"


class LocalBackend:
    """Worker processes on this machine (see the module docstring)."""

    Options = BackendOptions  # none of its own: `workers`, `threads_per_worker`, `fork`, `gpus` are the spec's

    @classmethod
    def from_spec(cls, spec: JobSpec, options: BackendOptions, log_dir: Path) -> LocalBackend:
        """The workers ``spec`` asks for: threads, batch format, recycling, fork, GPUs."""
        return cls(log_dir, spec.resolved_threads(), spec.batch_format, WorkerRecycling.of(spec), spec.fork, spec.gpus)

    def __init__(
        self,
        log_dir: Path,
        threads_per_worker: int = 1,
        batch_format: str = "pandas",
        recycling: WorkerRecycling | None = None,
        fork: bool = True,
        gpus: int = 0,
    ) -> None:
        self._log_dir = log_dir
        self._threads = threads_per_worker
        self._batch_format = batch_format
        self._recycling = recycling or WorkerRecycling()
        self._gpus = gpus
        # CUDA does not survive fork, and each worker sees its own GPU: GPU workers start from scratch.
        self._fork_wanted = fork and not gpus and hasattr(os, "fork") and os.path.isdir("/proc/self/task")
        self._zygote: ForkServer | None = None
        self._zygote_ready = False
        self._forking: dict[int, _Slot] = {}  # fork request number -> the slot waiting for its pid
        self._last_memory_check = 0.0
        self._slots: dict[int, _Slot] = {}
        self._selector = selectors.DefaultSelector()
        self._model: ModelRef | None = None
        self._task: JobTask | None = None
        self._workers = 0
        self._started = 0
        self._model_loads = 0
        self._closed = False

    def start(self, model: ModelRef, workers: int) -> None:
        self._model = model
        self._workers = workers
        self._log_dir.mkdir(parents=True, exist_ok=True)
        if self._fork_wanted:
            self._zygote = ForkServer(self._environment(), self._log_dir / "zygote.log")
            self._zygote.start(self._load_message(-1))
            self._selector.register(self._zygote.fileno(), selectors.EVENT_READ, _ZYGOTE)
            self._model_loads += 1
            return
        for index in range(workers):
            self._launch(index)

    def configure(self, task: JobTask) -> None:
        self._task = task
        for slot in list(self._slots.values()):
            self._send(slot, Configure(task))

    def idle(self) -> list[int]:
        if self._task is None:
            return []
        return [slot.index for slot in self._slots.values() if slot.ready and not slot.busy and slot.closed_at is None]

    def check_reach(self, files: Sequence[tuple[str, int | None]], output: str) -> None:
        """Workers run on this machine and see what the coordinator sees: nothing to check."""

    def submit(self, worker: int, chunk: Chunk, attempt: int, output_schema: str | None = None) -> None:
        slot = self._slots[worker]
        slot.busy = True
        self._send(slot, Invoke(chunk, attempt, output_schema))

    def scale(self, waiting: int) -> None:
        """The local pool keeps its size: ``workers`` is what this machine was given."""

    def wait(self, timeout: float) -> list[WorkerEvent]:
        if self._recycling.memory_mb is not None:
            timeout = min(timeout, MEMORY_CHECK_S)
        if any(slot.closed_at is not None for slot in self._slots.values()):
            timeout = min(timeout, EXIT_POLL_S)
        events: list[WorkerEvent] = []
        for key, _ in self._selector.select(timeout=max(0.0, timeout)):
            if key.data == _ZYGOTE:
                events.extend(self._on_zygote())
                continue
            slot = self._slots.get(key.data)
            if slot is None or slot.from_worker != key.fd:
                continue
            events.extend(self._drain(slot))
        events.extend(self._settle_ended())
        events.extend(self._enforce_memory())
        return events

    def kill(self, worker: int) -> None:
        slot = self._slots.get(worker)
        if slot is not None:
            self._retire(slot)
            self._launch(worker)

    def cold_starts(self) -> int:
        """Model loads: one for the fork server, one per worker started from scratch."""
        return self._model_loads

    def worker_starts(self) -> int:
        """Worker processes started, forked or not."""
        return self._started

    def shutdown(self) -> None:
        """Kill every worker at once: between invocations they hold nothing worth a graceful exit."""
        if self._closed:
            return
        self._closed = True
        for slot in list(self._slots.values()):
            self._retire(slot)
        if self._zygote is not None:
            self._zygote.shutdown()
        self._selector.close()

    # --- starting workers ------------------------------------------------------------------

    def _launch(self, index: int) -> None:
        if self._zygote is not None and not self._zygote_ready:
            return  # launched when the fork server is ready
        parent_read, child_write = os.pipe()
        child_read, parent_write = os.pipe()
        slot = _Slot(index, parent_write, parent_read)
        try:
            request = self._zygote.fork(index, child_read, child_write) if self._zygote is not None else None
            if request is not None:
                slot.request = request
                self._forking[request] = slot
            else:
                self._use_spawn()
                slot.process = start_process(
                    "squall.backends.local.worker", (child_read, child_write), self._environment(index),
                    self._log_dir / f"worker-{index}.log",
                )
                slot.pid = slot.process.pid
                self._model_loads += 1
        finally:
            os.close(child_read)
            os.close(child_write)
        os.set_blocking(parent_read, False)
        self._slots[index] = slot
        self._selector.register(parent_read, selectors.EVENT_READ, index)
        self._started += 1
        if slot.process is not None:
            self._send(slot, self._load_message(index))
        if self._task is not None:
            self._send(slot, Configure(self._task))

    def _load_message(self, index: int) -> Load:
        assert self._model is not None
        return Load(index, self._model, self._batch_format, time.time())

    def _use_spawn(self) -> None:
        """Give up on the fork server for the rest of the job (it is gone, or forking is unsafe)."""
        if self._zygote is None:
            return
        try:
            self._selector.unregister(self._zygote.fileno())
        except (KeyError, ValueError):
            pass
        self._zygote.shutdown()
        self._zygote = None
        self._forking.clear()

    def _on_zygote(self) -> list[WorkerEvent]:
        assert self._zygote is not None
        events: list[WorkerEvent] = []
        for message in self._zygote.messages():
            if isinstance(message, Ready):
                self._zygote_ready = True
                for index in range(self._workers):
                    self._launch(index)
            elif isinstance(message, Forked):
                self._adopt(message.request, message.pid)
            elif isinstance(message, LoadFailed):
                events.append(WorkerLoadFailed(-1, message.error))
            elif isinstance(message, (Unforkable, Gone)):
                was_ready = self._zygote_ready
                self._use_spawn()
                missing = [i for i in range(self._workers) if i not in self._slots]
                for index in missing if was_ready else range(self._workers):
                    self._launch(index)
                break
        return events

    def _adopt(self, request: int, pid: int) -> None:
        """Give a forked pid to the slot that asked for it, matched by request number, not by worker index:
        a slot retired and relaunched under the same index must not take its predecessor's pid."""
        slot = self._forking.pop(request, None)
        if slot is not None and self._slots.get(slot.index) is slot:
            slot.pid = pid  # its own "ready" may have named it already
        else:
            _kill_group(pid)  # a fork answered after its slot was retired

    # --- hearing from workers --------------------------------------------------------------

    def _drain(self, slot: _Slot) -> list[WorkerEvent]:
        events: list[WorkerEvent] = []
        while True:
            try:
                data = os.read(slot.from_worker, 1 << 16)
            except BlockingIOError:
                break
            if not data:
                self._ending(slot)
                return events
            events.extend(self._event(slot, message) for message in slot.buffer.feed(data))
        if any(isinstance(event, InvocationDone) for event in events):
            self._recycle_if_due(slot)
        return events

    def _ending(self, slot: _Slot) -> None:
        """The worker closed its pipe: it is exiting. Its death is reported by :meth:`_settle_ended`."""
        slot.closed_at = time.monotonic()
        self._unregister(slot)

    def _event(self, slot: _Slot, message: Message) -> WorkerEvent:
        if isinstance(message, Ready):
            slot.ready = True
            slot.pid = slot.pid or message.pid
            return WorkerReady(slot.index, message.init_s)
        if isinstance(message, LoadFailed):
            return WorkerLoadFailed(slot.index, message.error)
        assert isinstance(message, Reported), f"a worker sent {message}"
        slot.busy = False
        slot.invocations += 1
        return InvocationDone(slot.index, message.report)

    def _send(self, slot: _Slot, message: ToWorker) -> None:
        try:
            wire.send(slot.to_worker, message)
        except OSError:
            pass  # the worker is gone; its end-of-stream arrives through wait()

    # --- limits and recycling --------------------------------------------------------------

    def _enforce_memory(self) -> list[WorkerEvent]:
        limit = self._recycling.memory_mb
        now = time.monotonic()
        if limit is None or now - self._last_memory_check < MEMORY_CHECK_S:
            return []
        self._last_memory_check = now
        events: list[WorkerEvent] = []
        busy = [(slot.index, slot.pid) for slot in self._slots.values() if slot.busy and slot.pid and slot.closed_at is None]
        for index, pid in busy:
            used = tree_rss_mb(pid)
            if used > limit:
                events.append(WorkerDied(index, f"the worker used {used:.0f} MB, over the {limit} MB memory limit", "memory"))
                self.kill(index)
        return events

    def _recycle_if_due(self, slot: _Slot) -> None:
        """Replace a worker that served its quota of invocations or grew past the RSS threshold (leaks)."""
        policy = self._recycling
        due = policy.max_invocations is not None and slot.invocations >= policy.max_invocations
        if not due and policy.rss_mb is not None and slot.pid:
            due = tree_rss_mb(slot.pid) > policy.rss_mb
        if due:
            self.kill(slot.index)

    # --- ending workers --------------------------------------------------------------------

    def _settle_ended(self) -> list[WorkerEvent]:
        """Report each ending worker whose exit status is now known (or will never be), and replace it."""
        events: list[WorkerEvent] = []
        for slot in list(self._slots.values()):
            if slot.closed_at is None:
                continue
            code, knowable = self._exit_code(slot), self._exit_knowable(slot)
            if code is None and knowable and time.monotonic() - slot.closed_at < EXIT_WAIT_S:
                continue
            events.append(WorkerDied(slot.index, _death_reason(code) if knowable else "the worker ended with its fork server"))
            self._retire(slot)
            self._launch(slot.index)
        return events

    def _exit_code(self, slot: _Slot) -> int | None:
        if slot.process is not None:
            return slot.process.poll()
        if self._zygote is not None and slot.request is not None:
            return self._zygote.exit_code(slot.request)
        return None

    def _exit_knowable(self, slot: _Slot) -> bool:
        """Whether anyone will tell this worker's exit status: its process handle, or the fork server that made it."""
        return slot.process is not None or (self._zygote is not None and slot.request is not None)

    def _unregister(self, slot: _Slot) -> None:
        try:
            self._selector.unregister(slot.from_worker)
        except (KeyError, ValueError):
            pass

    def _retire(self, slot: _Slot) -> None:
        self._slots.pop(slot.index, None)
        self._unregister(slot)
        if slot.request is not None and self._zygote is not None:
            self._zygote.forget(slot.request)
        if slot.pid is not None:
            _kill_group(slot.pid)
        if slot.process is not None:
            try:
                slot.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass  # stuck in uninterruptible I/O: the kernel reaps it later; do not hang the job on it
        for fd in (slot.to_worker, slot.from_worker):
            try:
                os.close(fd)
            except OSError:
                pass

    def _environment(self, worker: int | None = None) -> dict[str, str]:
        extra = {"SQUALL_PARENT_PID": str(os.getpid())}
        if self._gpus and worker is not None:
            extra["CUDA_VISIBLE_DEVICES"] = gpu_for(worker, self._gpus, os.environ.get("CUDA_VISIBLE_DEVICES"))
        return worker_environment(self._threads, extra)


def _death_reason(code: int | None) -> str:
    if code is None:
        return "the worker closed its pipe but did not exit"
    if code < 0:
        return f"the worker was killed by {signal.Signals(-code).name}"
    return f"the worker exited with code {code}"


def gpu_for(worker: int, gpus: int, visible: str | None) -> str:
    """The one GPU worker ``worker`` may see: ``worker mod gpus``, counted within an existing CUDA_VISIBLE_DEVICES."""
    devices = [d.strip() for d in visible.split(",") if d.strip()] if visible else [str(i) for i in range(gpus)]
    return devices[worker % min(gpus, len(devices))]


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
