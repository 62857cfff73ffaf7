"""The Ray cluster a job runs on, seen from the driver: joining or starting it, and what its nodes can host and reach.

Only the driver calls these; worker actors never do.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from pathlib import Path
from typing import Any, Sequence

from squall.errors import InputError, UsageError
from squall.backends.ray.options import ActorResources
from squall.io.storage import is_remote

PROBE_TIMEOUT_S = 120.0
_log = logging.getLogger("squall.ray")


class RayRuntime:
    """This process as a Ray driver: of a cluster it joined (left running at the end) or of a local Ray it started
    (stopped at the end). Jobs that run at once in one process (``squall serve``) share it: the last to close
    disconnects."""

    _lock = threading.Lock()
    _users = 0
    _connected_here = False
    _started_here = False

    def __init__(self) -> None:
        self._closed = False

    @property
    def started_here(self) -> bool:
        """Whether squall started this Ray itself (a local one, with no autoscaler to add nodes)."""
        return RayRuntime._started_here

    @classmethod
    def connect(cls, address: str | None) -> RayRuntime:
        """Join the cluster at ``address`` (or ``$RAY_ADDRESS``), share a connection this process already has,
        or start a local Ray with every core of this machine."""
        try:
            import ray
        except ImportError:
            raise UsageError("the Ray backend needs Ray on this machine and every node: pip install 'squall[ray]'") from None
        with cls._lock:
            if not ray.is_initialized():
                cls._connect(ray, address or os.environ.get("RAY_ADDRESS") or None)
            cls._users += 1
        return cls()

    @classmethod
    def _connect(cls, ray: Any, address: str | None) -> None:
        quiet: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
        try:
            if address:
                ray.init(address=address, **quiet)
            else:
                # "local" starts a Ray of our own: a plain ray.init() would join any cluster `ray start` left on
                # this machine, which refuses num_cpus.
                ray.init(address="local", num_cpus=os.cpu_count() or 1, include_dashboard=False, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f"the Ray cluster at {address}" if address else "a local Ray"
            raise UsageError(f"cannot start or join {where}: {exc}; check `ray_address` (`ray status` on the head node)") from exc
        cls._connected_here, cls._started_here = True, not address

    def close(self) -> None:
        """Let go of the runtime; the last user disconnects, which stops a local Ray squall started."""
        import ray

        with RayRuntime._lock:
            if self._closed:
                return
            self._closed = True
            RayRuntime._users -= 1
            if RayRuntime._users == 0 and RayRuntime._connected_here and ray.is_initialized():
                ray.shutdown()
                RayRuntime._connected_here = RayRuntime._started_here = False


def alive_nodes() -> list[dict[str, Any]]:
    """The cluster's live nodes, as ``ray.nodes()`` describes them."""
    import ray

    return [node for node in ray.nodes() if node.get("Alive")]


def check_fits(resources: ActorResources, strict: bool = True) -> None:
    """Raise :class:`UsageError` (``strict``) or warn when no live node could host one worker now."""
    nodes = fitting_nodes(resources)
    if nodes:
        return
    largest: dict[str, float] = max(
        (node["Resources"] for node in alive_nodes()), key=lambda r: (r.get("GPU", 0), r.get("CPU", 0)), default={}
    )
    has = ", ".join(f"{largest.get(name, 0):g} {name}" for name in resources.needs())
    problem = f"no node of the Ray cluster can host a worker asking for {resources.describe()} (the largest has {has})"
    if strict:
        raise UsageError(f"{problem}; lower ray_num_cpus, ray_num_gpus or ray_memory, or add a node that has them")
    _log.warning("%s; the workers wait until the cluster adds one (an autoscaler) or resources free up", problem)


def fitting_nodes(resources: ActorResources) -> list[dict[str, Any]]:
    """Live nodes that could host one worker."""
    needs = resources.needs()
    return [node for node in alive_nodes() if all(node["Resources"].get(name, 0.0) >= amount for name, amount in needs.items())]


def check_reach(files: Sequence[tuple[str, int | None]], output: str, resources: ActorResources) -> None:
    """Raise :class:`InputError` unless every node that could host a worker sees each local file (at its size)
    and can write beside ``output`` where the driver sees what it wrote: a path on this machine's own disk is
    refused on a cluster."""
    local_files = [(path.removeprefix("file://"), size) for path, size in files if not is_remote(path)]
    if not local_files and is_remote(output):
        return
    try:
        beacon = _place_beacon(output.removeprefix("file://")) if not is_remote(output) else None
    except OSError as exc:
        raise InputError(f"cannot write beside the output {output}: {exc.strerror}; check the output folder") from None
    try:
        problems = _probe(fitting_nodes(resources), local_files, beacon)
    finally:
        if beacon is not None:
            for written in beacon.parent.glob(beacon.name + "*"):
                written.unlink(missing_ok=True)
    for node, found in problems.items():
        if found:
            raise InputError(
                f"Ray node {node[:12]} cannot reach the job's files: {found[0]}; put inputs, model and output on "
                "storage every node reaches (an object store URL such as s3://…, or a mount shared by every node)"
            )


def _probe(nodes: list[dict[str, Any]], files: list[tuple[str, int | None]], beacon: Path | None) -> dict[str, list[str]]:
    """What each node cannot reach; nodes that die while probed are left out (they host no worker)."""
    import ray
    from ray.exceptions import RayError
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = ray.remote(num_cpus=0, max_retries=0)(_probe_node)
    calls = {
        node["NodeID"]: probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)).remote(
            files, str(beacon) if beacon else None
        )
        for node in nodes
    }
    ray.wait(list(calls.values()), num_returns=len(calls), timeout=PROBE_TIMEOUT_S)
    problems: dict[str, list[str]] = {}
    for node, call in calls.items():
        try:
            problems[node] = ray.get(call, timeout=0)
        except RayError as exc:
            if not isinstance(exc, (ray.exceptions.NodeDiedError, ray.exceptions.WorkerCrashedError)):
                problems[node] = [f"the probe did not answer in {PROBE_TIMEOUT_S:g} s ({type(exc).__name__})"]
            continue
        if beacon is not None and not problems[node] and not Path(f"{beacon}.{node}").exists():
            problems[node] = [f"what it writes in {beacon.parent} is not seen by the driver"]
    return problems


def _place_beacon(output: str) -> Path:
    """A uniquely named file in the output's nearest existing folder, for the nodes to find and answer beside."""
    folder = Path(output)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    beacon = folder / f".squall-reach-{uuid.uuid4().hex}"
    beacon.write_text("squall")
    return beacon


def _probe_node(files: list[tuple[str, int | None]], beacon: str | None) -> list[str]:
    """Runs on one node: what it cannot reach (an empty list when it reaches everything)."""
    problems = []
    for path, size in files:
        if not os.path.exists(path):
            problems.append(f"{path} does not exist there")
        elif size is not None and os.path.isfile(path) and os.path.getsize(path) != size:
            problems.append(f"{path} has {os.path.getsize(path)} bytes there, not {size}")
    if beacon is not None:
        if not os.path.exists(beacon):
            problems.append(f"the output folder {os.path.dirname(beacon)} is not the driver's")
        else:
            try:
                Path(f"{beacon}.{_node_id()}").write_text("seen")
            except OSError as exc:
                problems.append(f"cannot write in {os.path.dirname(beacon)}: {exc.strerror}")
    return problems


def _node_id() -> str:
    import ray

    return str(ray.get_runtime_context().get_node_id())
