"""A spec resolved into what a run is made of: the model reference, the output location, the limits, the
workers and the task every invocation is given. Entered once per run, by :mod:`squall.pipeline`.

Resolving also refuses, before any work, what would fail later: a model file
that is not there, an unknown flavor or an untrusted remote pickle, a side
file (``log_file``, ``metrics_file``) that names a folder, an incremental run
over a database, an output the spec names wrongly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from squall.backends.base import Backend
from squall.backends.registry import BACKENDS
from squall.errors import ModelLoadError, SpecError
from squall.io import storage
from squall.io.output import OUTPUTS, output_kind
from squall.limits import JobLimits, RetryPolicy
from squall.models.base import ModelRef
from squall.models.code import is_code_ref
from squall.models.registry import resolved
from squall.runtime.task import JobTask, OutputNaming
from squall.spec import JobSpec
from squall.sql.drivers import is_database_url

if TYPE_CHECKING:
    from squall.plan.planner import Plan

_SIDE_FILE_NAMES = {"log_file": "squall.log", "metrics_file": "squall.prom"}


@dataclass(frozen=True)
class ResolvedJob:
    """``spec`` resolved: its model, output location, file locations, store options and limits."""

    spec: JobSpec
    model: ModelRef
    output: str
    locations: tuple[str, ...]
    storage_options: dict[str, Any]
    limits: JobLimits

    @classmethod
    def of(cls, spec: JobSpec) -> ResolvedJob:
        """Resolve ``spec``; raises :class:`SpecError` for an output it names wrongly."""
        options = storage.connection_options(spec.storage_options, spec.endpoint_url)
        output = output_location(spec)
        every = (*spec.input, output, absolute(spec.model))
        locations = tuple(uri for uri in every if not is_database_url(uri))
        return cls(spec, model_ref(spec), output, locations, options, limits_of(spec))

    def check(self) -> None:
        """Refuse, before any work, a model that cannot be loaded, a side file that names a folder, or an
        incremental run over a database."""
        check_model(self.spec)
        check_side_files(self.spec)
        if self.spec.incremental and any(is_database_url(uri) for uri in (*self.spec.input, self.spec.output)):
            raise SpecError("`incremental` needs file inputs and a directory output; drop it for a database input or table")

    def configure_storage(self) -> None:
        """Make this process reach the job's stores with its options (the workers do the same with the task)."""
        storage.configure(self.storage_options, self.locations)

    def task(self, plan: Plan, part_prefix: str = "") -> JobTask:
        """What every invocation of ``plan`` is given besides its chunk."""
        spec = self.spec
        return JobTask(
            job_id=plan.job_id,
            model=self.model,
            read_options=plan.read_options,
            key=plan.key,
            features=plan.features,
            batch_size=spec.batch_size,
            batch_format=spec.batch_format,
            preprocess=spec.preprocess,
            postprocess=spec.postprocess,
            output=self.output,
            output_format=spec.output_format,
            naming=OutputNaming(spec.prediction_column, tuple(spec.output_columns or ()), spec.output_layout),
            part_prefix=part_prefix,
            memory_mb=spec.memory,
            storage_options=self.storage_options,
            locations=self.locations,
        )


def model_ref(spec: JobSpec) -> ModelRef:
    """The model the workers of ``spec`` load (paths made absolute, placed on its GPU when the backend gives one)."""
    gpus = spec.backend_settings().gpus_per_worker() or spec.gpus
    return ModelRef(
        uri=absolute(spec.model),
        flavor=spec.flavor,
        method=spec.method,
        state_dict=absolute(spec.state_dict) if spec.state_dict else None,
        output=spec.model_output,
        sha256=spec.model_sha256,
        trust=spec.trust_model,
        device="cuda:0" if gpus else "cpu",  # each worker sees its own GPU, as 0
        threads=spec.resolved_threads(),
        storage_options=storage.connection_options(spec.storage_options, spec.endpoint_url),
    )


def output_location(spec: JobSpec) -> str:
    """Where the output goes, as the output that serves it spells it (a directory made absolute,
    ``DATABASE_URL#table`` for a table)."""
    return OUTPUTS.load(output_kind(spec.output)).location_of(spec.output, spec.table)


def limits_of(spec: JobSpec) -> JobLimits:
    """The coordinator's limits as ``spec`` sets them."""
    return JobLimits(
        timeout=spec.timeout,
        retry=RetryPolicy(spec.max_attempts, spec.backoff_base, spec.backoff_max, tuple(spec.no_retry_on)),
        split_after=spec.split_after,
        min_chunk_rows=spec.min_chunk_rows,
        batch_lane=spec.batch_lane,
        batch_lane_timeout=spec.batch_lane_timeout,
        max_error_rate=spec.max_error_rate,
        max_dead_chunks=spec.max_dead_chunks,
    )


def backend_for(spec: JobSpec, log_dir: Path) -> Backend:
    """The workers ``spec`` asks for (its ``backend`` with that backend's options), not started; local
    workers log to ``log_dir``."""
    kind = BACKENDS.load(spec.backend)
    return kind.from_spec(spec, spec.backend_settings(), log_dir)


def check_model(spec: JobSpec) -> None:
    """Fail before any work on a model that cannot be found, whose flavor is unknown, or that is not trusted."""
    if spec.gpus and os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        raise ModelLoadError("--gpus asks for GPUs but CUDA_VISIBLE_DEVICES is empty (every GPU hidden); unset it or drop --gpus")
    for path, field in ((spec.model, "model"), (spec.state_dict, "state_dict")):
        if path and not is_code_ref(path) and not storage.is_remote(path) and not os.path.exists(path.removeprefix("file://")):
            raise ModelLoadError(f"{path}: no such model file or directory; check `{field}`")
    resolved(model_ref(spec))


def check_side_files(spec: JobSpec) -> None:
    """Refuse, before any work, a ``log_file`` or ``metrics_file`` that names a folder or lies under a file."""
    for name, value in (("log_file", spec.log_file), ("metrics_file", spec.metrics_file)):
        if value is None or (name == "log_file" and value == "-"):
            continue
        path = Path(value).expanduser()
        if path.is_dir():
            raise SpecError(f"`{name}` {value} is a folder; name a file in it, e.g. {path / _SIDE_FILE_NAMES[name]}")
        folder = next((parent for parent in path.parents if parent.exists()), None)
        if folder is not None and not folder.is_dir():
            raise SpecError(f"`{name}` {value} lies under {folder}, which is a file, not a folder; name another path")


def absolute(uri: str) -> str:
    """``uri`` with a local path made absolute (URLs, remote URIs and ``module:attr`` code as they are)."""
    if "://" in uri or is_code_ref(uri) or storage.is_remote(uri):
        return uri
    return os.path.abspath(uri)
