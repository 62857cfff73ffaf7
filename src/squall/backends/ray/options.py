"""The Ray backend's options: ``[backend.ray]`` in a spec file, ``--ray-OPTION`` on the command line."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator

from squall.backends.base import BackendOptions

if TYPE_CHECKING:
    from squall.spec import JobSpec


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


class RayOptions(BackendOptions):
    """Where the Ray workers run and what each reserves."""

    address: str | None = Field(
        None, description="Ray cluster to join (`auto`, `HOST:PORT`, `ray://HOST:10001`); default `$RAY_ADDRESS`, else a local Ray."
    )
    num_cpus: float = Field(1.0, gt=0, description="CPUs each Ray worker reserves; also its BLAS/OpenMP threads.")
    num_gpus: float = Field(0.0, ge=0, description="GPUs each Ray worker reserves; above 0 the model is placed on that GPU.")
    memory: int | None = Field(None, gt=0, description="MB each Ray worker reserves for scheduling; default `memory`.")
    runtime_env: dict[str, Any] = Field(
        default_factory=dict, description="Ray `runtime_env` of the workers (env_vars, pip, working_dir), as JSON on the command line."
    )
    max_workers: int | None = Field(None, gt=0, description="Grow the Ray pool from `workers` up to this many while chunks wait.")
    placement_timeout: float = Field(
        600.0, gt=0, description="Seconds the first Ray worker may wait to be placed on a node before the job fails."
    )

    @field_validator("runtime_env", mode="before")
    @classmethod
    def _runtime_env_from_json(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return json.loads(value) if value.strip() else {}
            except ValueError:
                raise ValueError('give a JSON object, e.g. {"env_vars": {"A": "1"}}') from None
        return value

    def threads_per_worker(self) -> int | None:
        """As many threads as the CPUs each actor reserves."""
        return max(1, int(self.num_cpus))

    def gpus_per_worker(self) -> float:
        return self.num_gpus

    def check(self, spec: JobSpec) -> None:
        if spec.backend == "ray" and spec.gpus:
            raise ValueError("`gpus` is for the local backend; on Ray give each worker GPUs with `ray_num_gpus`")
        if self.max_workers is not None and self.max_workers < spec.workers:
            raise ValueError(f"`ray_max_workers` ({self.max_workers}) is below `workers` ({spec.workers}), the pool's minimum")

    def resources(self, memory: int | None) -> ActorResources:
        """What each worker actor reserves (``memory``, the spec's, when ``memory`` is not set here)."""
        return ActorResources(self.num_cpus, self.num_gpus, self.memory or memory, self.runtime_env)

    def capped(self, workers: int) -> RayOptions:
        """No growth past the granted ``workers``."""
        return self.model_copy(update={"max_workers": None})
