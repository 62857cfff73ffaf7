"""Backends by name (the spec's ``backend`` field): a new backend is a new module and one line here."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from squall.backends.base import Backend, WorkerRecycling
from squall.spec import JobSpec


def recycling_of(spec: JobSpec) -> WorkerRecycling:
    """When ``spec``'s workers are killed or replaced."""
    return WorkerRecycling(spec.memory, spec.max_invocations_per_worker, spec.recycle_rss_mb)


def _local(spec: JobSpec, log_dir: Path) -> Backend:
    from squall.backends.local.backend import LocalBackend

    return LocalBackend(log_dir, spec.resolved_threads(), spec.batch_format, recycling_of(spec), spec.fork, spec.gpus)


def _ray(spec: JobSpec, log_dir: Path) -> Backend:
    from squall.backends.ray.backend import RayBackend

    return RayBackend.for_spec(spec, recycling_of(spec))


BACKENDS: dict[str, Callable[[JobSpec, Path], Backend]] = {"local": _local, "ray": _ray}


def open_backend(spec: JobSpec, log_dir: Path) -> Backend:
    """A backend for ``spec``, not started; its worker logs (where it keeps them) go to ``log_dir``."""
    return BACKENDS[spec.backend](spec, log_dir)
