"""The Ray backend: warm workers as Ray actors on a Ray cluster, for when one machine is not enough.

The coordinator and its SQLite store stay on the driver, unchanged; this is
only another pool of workers. Each actor (:class:`squall.backends.ray.actor.ActorWorker`)
loads the model once and then serves invocations as actor calls that carry
chunk descriptors and return reports: the rows travel between storage and the
actor, never through the driver. So inputs, model and output must be on
storage every node reaches; :meth:`RayBackend.check_reach` refuses a path that
only the driver's machine has.

Failures map onto the same events as the local backend: an actor that dies
(its process killed, its node gone) is ``WorkerDied`` and is replaced by a
fresh actor; a timeout is the coordinator calling :meth:`RayBackend.kill`,
which kills the actor with ``ray.kill`` and starts another; an actor over its
memory limit (measured inside the actor) is killed and reported as a memory
kill. Ray itself never restarts actors or retries their calls: retries,
splits and dead letters stay the coordinator's, as everywhere else.

With ``ray_max_workers`` the pool grows from ``workers`` actors toward that
many while chunks wait, one actor at a time, and gives idle actors back
down to ``workers`` once fewer chunks wait than actors hold none.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from squall.backends.base import InvocationDone, WorkerDied, WorkerEvent, WorkerLoadFailed, WorkerReady, WorkerRecycling
from squall.backends.ray.options import ActorResources, RayOptions
from squall.errors import ErrorInfo, SpecError, UsageError
from squall.models.base import ModelRef
from squall.plan.chunk import Chunk
from squall.runtime.messages import Configure, Crashed, Invoke, Load, LoadFailed, OverMemory, Ready, Reported, decode, encode
from squall.runtime.task import JobTask

if TYPE_CHECKING:
    from squall.spec import JobSpec



@dataclass
class _Actor:
    index: int
    handle: Any
    ready: bool = False
    configured: bool = False
    busy: bool = False
    invocations: int = 0


class RayBackend:
    """Worker actors on a Ray cluster (see the module docstring)."""

    def __init__(
        self,
        address: str | None,
        resources: ActorResources,
        batch_format: str = "pandas",
        recycling: WorkerRecycling | None = None,
        max_workers: int | None = None,
        placement_timeout: float = 600.0,
    ) -> None:
        self._address = address
        self._resources = resources
        self._batch_format = batch_format
        self._recycling = recycling or WorkerRecycling()
        self._max_workers = max_workers
        self._placement_timeout = placement_timeout
        self._runtime: Any = None  # the RayRuntime this backend holds, once started
        self._remote: Any = None
        self._model: ModelRef | None = None
        self._task: JobTask | None = None
        self._min_workers = 0
        self._actors: dict[int, _Actor] = {}
        self._calls: dict[Any, tuple[_Actor, str]] = {}  # pending actor call → (its actor, what it was)
        self._started = 0
        self._closed = False
        self._started_at = 0.0
        self._ever_ready = False

    Options = RayOptions

    @classmethod
    def from_spec(cls, spec: JobSpec, options: RayOptions, log_dir: Path) -> RayBackend:
        """The actors ``options`` describe (worker logs stay on their nodes: ``log_dir`` is not used)."""
        resources = options.resources(spec.memory)
        return cls(options.address, resources, spec.batch_format, WorkerRecycling.of(spec), options.max_workers, options.placement_timeout)

    def start(self, model: ModelRef, workers: int) -> None:
        import ray

        from squall.backends.ray.actor import ActorWorker

        self._model = model
        self._min_workers = workers
        self._started_at = time.monotonic()
        from squall.backends.ray.cluster import RayRuntime

        self._runtime = RayRuntime.connect(self._address)
        self._refuse_if_unplaceable()
        self._remote = ray.remote(concurrency_groups={"lifeline": 1})(ActorWorker)  # type: ignore[call-overload]
        for index in range(workers):
            self._launch(index)

    def configure(self, task: JobTask) -> None:
        self._task = task
        for actor in self._actors.values():
            self._call(actor, "configure", actor.handle.configure.remote(encode(Configure(task))))

    def check_reach(self, files: Sequence[tuple[str, int | None]], output: str) -> None:
        from squall.backends.ray.cluster import check_reach

        check_reach(files, output, self._resources)

    def idle(self) -> list[int]:
        return [a.index for a in self._actors.values() if a.ready and a.configured and not a.busy]

    def submit(self, worker: int, chunk: Chunk, attempt: int, output_schema: str | None = None) -> None:
        actor = self._actors[worker]
        actor.busy = True
        call = actor.handle.invoke.remote(encode(Invoke(chunk, attempt, output_schema)), self._recycling.memory_mb)
        self._call(actor, "invoke", call)

    def scale(self, waiting: int) -> None:
        """Grow toward ``ray_max_workers`` while ``waiting`` chunks find no idle actor; shrink idle actors back."""
        if self._max_workers is None:
            return
        starting = [a for a in self._actors.values() if not (a.ready and a.configured)]
        idle = self.idle()
        if waiting > len(idle) and not starting and len(self._actors) < self._max_workers:
            self._launch(next(i for i in range(self._max_workers) if i not in self._actors))
        elif waiting < len(idle) and len(self._actors) > self._min_workers:
            self._retire(self._actors[max(idle)])

    def wait(self, timeout: float) -> list[WorkerEvent]:
        import ray

        if not self._ever_ready and time.monotonic() - self._started_at > self._placement_timeout:
            raise UsageError(
                f"no Ray worker asking for {self._resources.describe()} was placed in {self._placement_timeout:g} s "
                "(ray_placement_timeout); add a node that has them (`ray status` shows what the cluster has), "
                "or lower the `ray_` fields"
            )
        if not self._calls:
            time.sleep(max(0.0, timeout))
            return []
        ready, _ = ray.wait(list(self._calls), num_returns=1, timeout=max(0.0, timeout))
        if ready:
            ready, _ = ray.wait(list(self._calls), num_returns=len(self._calls), timeout=0)
        events: list[WorkerEvent] = []
        for ref in ready:
            entry = self._calls.pop(ref, None)  # gone when an answer before it retired its actor
            if entry is not None and self._actors.get(entry[0].index) is entry[0]:
                events.extend(self._answered(entry[0], entry[1], ref))
        return events

    def kill(self, worker: int) -> None:
        actor = self._actors.get(worker)
        if actor is not None:
            self._retire(actor)
            self._launch(worker)

    def cold_starts(self) -> int:
        """Every actor loads the model itself: one load per actor started."""
        return self._started

    def worker_starts(self) -> int:
        return self._started

    def shutdown(self) -> None:
        """Kill every actor; a local Ray this backend started is stopped."""
        if self._closed:
            return
        self._closed = True
        for actor in list(self._actors.values()):
            self._retire(actor)
        if self._runtime is not None:
            self._runtime.close()

    # --- actors ----------------------------------------------------------------------------

    def _launch(self, index: int) -> None:
        assert self._model is not None
        try:
            handle = self._remote.options(**self._resources.actor_options()).remote(index, self._model.threads)
        except (TypeError, ValueError) as exc:
            raise SpecError(f"Ray refused the worker options: {exc}; check `ray_runtime_env` and the `ray_` fields") from None
        actor = _Actor(index, handle)
        self._actors[index] = actor
        self._started += 1
        load = Load(index, self._model, self._batch_format, time.time())
        self._call(actor, "lifeline", handle.lifeline.options(concurrency_group="lifeline").remote())
        self._call(actor, "load", handle.load.remote(encode(load)))
        if self._task is not None:
            self._call(actor, "configure", handle.configure.remote(encode(Configure(self._task))))

    def _refuse_if_unplaceable(self) -> None:
        """On a Ray squall started, refuse workers no node can host (nothing would ever add one); a cluster it
        joined may add nodes (an autoscaler), so there it only warns."""
        assert self._runtime is not None
        from squall.backends.ray.cluster import check_fits

        check_fits(self._resources, strict=self._runtime.started_here)

    def _retire(self, actor: _Actor) -> None:
        import ray
        from ray.exceptions import RayError

        self._actors.pop(actor.index, None)
        for ref in [ref for ref, (owner, _) in self._calls.items() if owner is actor]:
            del self._calls[ref]
        try:
            ray.kill(actor.handle, no_restart=True)
        except (RayError, ValueError):  # an actor already gone cannot be killed again; that is the point
            pass

    def _call(self, actor: _Actor, kind: str, ref: Any) -> None:
        self._calls[ref] = (actor, kind)

    def _answered(self, actor: _Actor, kind: str, ref: Any) -> list[WorkerEvent]:
        import ray
        from ray.exceptions import RayError, RayTaskError, RuntimeEnvSetupError

        try:
            answer = ray.get(ref)
        except RuntimeEnvSetupError as exc:
            message = f"{exc.error_message or _summary(exc)}; check `ray_runtime_env`"
            return [WorkerLoadFailed(actor.index, ErrorInfo("RuntimeEnvSetupError", message, str(exc)))]
        except RayError as exc:
            if getattr(exc, "actor_init_failed", False) or isinstance(exc, RayTaskError):
                message = f"the worker actor could not start: {_summary(exc)}; install squall on every node " \
                          "(pip install 'squall[ray]') or ship it with `ray_runtime_env`"
                return [WorkerLoadFailed(actor.index, ErrorInfo(type(exc).__name__, message, str(exc)))]
            self.kill(actor.index)
            self._refuse_if_unplaceable()
            return [WorkerDied(actor.index, f"the Ray actor died: {_summary(exc)}")]
        said = None if answer is None else decode(answer)
        if isinstance(said, LoadFailed):
            return [WorkerLoadFailed(actor.index, said.error)]
        if isinstance(said, Ready):
            actor.ready = self._ever_ready = True
            return [WorkerReady(actor.index, said.init_s)]
        if kind == "configure":
            actor.configured = True
            return []
        assert isinstance(said, (Reported, OverMemory, Crashed)), f"an actor answered {said}"
        return self._invoked(actor, said)

    def _invoked(self, actor: _Actor, answer: Reported | OverMemory | Crashed) -> list[WorkerEvent]:
        actor.busy = False
        if isinstance(answer, OverMemory):
            limit = self._recycling.memory_mb
            self.kill(actor.index)
            return [WorkerDied(actor.index, f"the worker used {answer.used_mb:.0f} MB, over the {limit} MB memory limit", "memory")]
        if isinstance(answer, Crashed):  # what ends a local worker process ends the actor: it is replaced
            self.kill(actor.index)
            return [WorkerDied(actor.index, f"the worker crashed: {answer.error}")]
        actor.invocations += 1
        event = InvocationDone(actor.index, answer.report)
        policy = self._recycling
        if (policy.max_invocations is not None and actor.invocations >= policy.max_invocations) or (
            policy.rss_mb is not None and answer.rss_mb > policy.rss_mb
        ):
            self.kill(actor.index)
        return [event]


def _summary(exc: BaseException) -> str:
    """Ray's first line (what happened) and its last (why, when Ray knows: the exit detail, the node), at most 400 chars."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    text = lines[0] if len(lines) == 1 else f"{lines[0]} ({lines[-1]})"
    return text[:400]
