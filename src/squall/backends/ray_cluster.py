"""The Ray cluster a job runs on, seen from the driver: joining or starting it, and what its nodes can host and reach.

Only the driver calls these; worker actors never do.
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from squall.errors import InputError, UsageError
from squall.io.storage import is_remote


class RayRuntime:
    """This process as a Ray driver: of a cluster it joined (left alone at the end) or of a local Ray it started (stopped)."""

    def __init__(self, connected_here: bool) -> None:
        self._connected_here = connected_here

    @classmethod
    def connect(cls, address: str | None) -> RayRuntime:
        """Join the cluster at ``address`` (or ``$RAY_ADDRESS``), keep a connection this process already has,
        or start a local Ray with every core of this machine."""
        try:
            import ray
        except ImportError:
            raise UsageError("the Ray backend needs Ray on this machine and every node: pip install 'squall[ray]'") from None

        if ray.is_initialized():
            return cls(connected_here=False)
        address = address or os.environ.get("RAY_ADDRESS") or None
        quiet: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
        try:
            if address:
                ray.init(address=address, **quiet)
            else:
                ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f"the Ray cluster at {address}" if address else "a local Ray"
            raise UsageError(f"cannot start or join {where}: {exc}; check `ray_address` (`ray status` on the head node)") from exc
        return cls(connected_here=True)

    def close(self) -> None:
        """Disconnect, which stops a local Ray this runtime started; a joined cluster keeps running."""
        import ray

        if self._connected_here and ray.is_initialized():
            ray.shutdown()


@dataclass(frozen=True)
class ActorResources:
    """What each worker actor reserves on the cluster, and the Ray ``runtime_env`` it runs in."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    memory_mb: int | None = None
    runtime_env: dict[str, Any] = field(default_factory=dict)

    def actor_options(self) -> dict[str, Any]:
        """Keyword arguments of ``ActorClass.options``; Ray never restarts a worker: squall replaces it itself."""
        options: dict[str, Any] = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus, "max_restarts": 0, "max_task_retries": 0}
        if self.memory_mb:
            options["memory"] = self.memory_mb * 1024 * 1024
        if self.runtime_env:
            options["runtime_env"] = self.runtime_env
        return options

    def needs(self) -> dict[str, float]:
        """The resources one worker needs, as Ray names them."""
        wanted = {"CPU": self.num_cpus, "GPU": self.num_gpus, "memory": float((self.memory_mb or 0) * 1024 * 1024)}
        return {name: amount for name, amount in wanted.items() if amount}

    def describe(self) -> str:
        parts = [f"{self.num_cpus:g} CPU"]
        if self.num_gpus:
            parts.append(f"{self.num_gpus:g} GPU")
        if self.memory_mb:
            parts.append(f"{self.memory_mb} MB memory")
        return ", ".join(parts)


def alive_nodes() -> list[dict[str, Any]]:
    """The cluster's live nodes, as ``ray.nodes()`` describes them."""
    import ray

    return [node for node in ray.nodes() if node.get("Alive")]


def check_fits(resources: ActorResources) -> None:
    """Raise :class:`UsageError` when no live node could ever host one worker (it would wait forever)."""
    nodes = alive_nodes()
    needs = resources.needs()
    if any(all(node["Resources"].get(name, 0.0) >= amount for name, amount in needs.items()) for node in nodes):
        return
    largest: dict[str, float] = max(
        (node["Resources"] for node in nodes), key=lambda r: (r.get("GPU", 0), r.get("CPU", 0)), default={}
    )
    has = ", ".join(f"{largest.get(name, 0):g} {name}" for name in needs)
    raise UsageError(
        f"no node of the Ray cluster can host a worker asking for {resources.describe()} (the largest has {has}); "
        "lower ray_num_cpus, ray_num_gpus or ray_memory, or add a node that has them"
    )


def check_reach(files: Sequence[tuple[str, int | None]], output: str) -> None:
    """Raise :class:`InputError` unless every live node sees each local file (at its size) and can write beside
    ``output`` where the driver sees what it wrote: a path on this machine's own disk is refused on a cluster."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    local_files = [(path.removeprefix("file://"), size) for path, size in files if not is_remote(path)]
    if not local_files and is_remote(output):
        return
    beacon = _place_beacon(output.removeprefix("file://")) if not is_remote(output) else None
    probe = ray.remote(num_cpus=0, max_retries=0)(_probe_node)
    calls = {
        node["NodeID"]: probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)).remote(
            local_files, str(beacon) if beacon else None
        )
        for node in alive_nodes()
    }
    try:
        problems = {node: ray.get(call, timeout=120) for node, call in calls.items()}
        if beacon is not None:
            for node in calls:
                if not Path(f"{beacon}.{node}").exists() and not problems[node]:
                    problems[node] = [f"what it writes in {beacon.parent} is not seen by the driver"]
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
