"""The public Python API: ``run``, ``plan``, ``resume``, ``status`` and ``jobs``. The CLI calls exactly these."""

from __future__ import annotations

import os
import secrets
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from typing import TYPE_CHECKING

from squall.backends.base import Backend
from squall.backends.registry import open_backend
from squall.errors import EnvironmentFault, InputError, JobStateError, ModelLoadError, OutputUnwritable, SpecError, SquallError, environment_cause, stopped_by_environment
from squall.io import storage
from squall.models.base import ModelRef
from squall.models.artifact import is_remote
from squall.models.code import is_code_ref
from squall.models.registry import resolved
from squall.observe.batchsizes import BatchSizeRecorder
from squall.observe.cost import PriceTable, measured_cost, memory_size_mb
from squall.observe.events import JobListener
from squall.retry import RetryPolicy
from squall.runtime.task import JobTask, OutputNaming
from squall.spec import JobSpec, default_state_dir
from squall.sql.drivers import is_database_url
from squall.store import ChunkCounts, JobRecord, JobStore

if TYPE_CHECKING:
    from squall.coordinator import JobLimits, JobResult
    from squall.io.output import Output
    from squall.observe.forecast import Forecast
    from squall.observe.report import JobReport
    from squall.plan.planner import Plan
    from squall.tuning.tuner import Tuning

# The planner, coordinator and committer pull in pyarrow and fsspec; they are imported
# inside the functions below so that workers start loading the model first.


@dataclass(frozen=True)
class JobStatus:
    """A job's record and where its chunks are."""

    job: JobRecord
    counts: ChunkCounts

    @property
    def rows_per_s(self) -> float:
        end = self.job.finished_at or time.time()
        start = self.job.started_at or self.job.created_at
        return self.counts.rows_in / (end - start) if end > start else 0.0


def new_job_id() -> str:
    """A fresh, sortable job id: UTC time plus a random suffix long enough that ids made in the same second
    (hundreds of jobs posted at once to ``squall serve``) do not collide."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(4)


def plan(spec: JobSpec, job_id: str | None = None) -> Plan:
    """The chunks ``spec`` would run, without running anything."""
    from squall.plan.planner import make_plan

    _check_model(spec)
    _configure_storage(spec)
    return make_plan(spec, job_id or spec.job_id or "dry-run")


def forecast(job_plan: Plan, spec: JobSpec) -> Forecast:
    """What ``job_plan`` will take and cost, at the speed the newest job with the same model measured."""
    from squall.observe.forecast import forecast as make_forecast
    from squall.observe.forecast import measured_speed

    store = JobStore(spec.resolved_state_dir())
    try:
        return make_forecast(job_plan, spec, measured_speed(store, spec))
    finally:
        store.close()


def tune(
    spec: JobSpec, file_values: Mapping[str, Any] | None = None, objective: str = "time", sample_rows: int | None = None
) -> Tuning:
    """Measure the model on a sample of the input; recommend batch_size, chunk_rows, workers and memory."""
    from squall.tuning.tuner import DEFAULT_SAMPLE_ROWS
    from squall.tuning.tuner import tune as measure_and_recommend

    if objective not in ("time", "cost"):
        raise SpecError(f"objective must be `time` or `cost`, not {objective!r}")
    _check_model(spec)
    return measure_and_recommend(spec, file_values or {}, objective, sample_rows or DEFAULT_SAMPLE_ROWS)  # type: ignore[arg-type]


def run(
    spec: JobSpec, listeners: Sequence[JobListener] = (), job_id: str | None = None, backend: Backend | None = None
) -> JobResult:
    """Run ``spec`` to completion and return how it ended.

    Bad specs, inputs, models and outputs raise :class:`squall.errors.UsageError`
    before any work starts. A job that runs and fails returns a result with
    state ``FAILED`` (it does not raise).

    ``backend`` is a pool of workers to run on instead of fresh local workers
    (``squall serve`` lends its warm pool this way); ``run`` calls its
    ``start``, ``configure`` and, at the end, ``shutdown``.
    """
    job_id = job_id or spec.job_id or new_job_id()
    store = JobStore(spec.resolved_state_dir())
    backend = backend or _backend(store, spec, job_id)
    try:
        if store.has_job(job_id):
            raise JobStateError(f"a job named {job_id!r} already exists; pick another --job-id or `squall resume {job_id}`")
        _check_model(spec)
        _refuse_incremental_databases(spec)
        _configure_storage(spec)
        backend.start(_model_ref(spec), spec.workers)  # workers load the model while we plan
        from squall.io import layout
        from squall.io.output import open_output
        from squall.ledger import Ledger, Selection
        from squall.plan.planner import make_plan

        output = open_output(_output_location(spec))
        _refuse_busy_owner(store, output)
        previous = output.manifest() if spec.incremental else None
        selection = Selection(spec, Ledger.from_manifest(previous) if previous else None)
        job_plan = make_plan(spec, job_id, only=selection)
        assert selection.increment is not None
        prefix = layout.run_prefix(selection.increment.run) if spec.incremental else ""
        task = task_for(spec, job_plan, prefix)
        _refuse_inputs_inside(job_plan, task.output)
        backend.check_reach(_reached_files(job_plan, task), task.output)
        with _output_writable(output.uri):
            storage.retrying(lambda: output.claim(job_id, spec.overwrite, spec.incremental))
        store.lock_job(job_id)
        store.create_job(job_id, spec.to_json(), task.to_json(), task.output, job_plan.chunks, selection.increment.to_json())
        return _drive(store, spec, task, listeners, backend)
    finally:
        backend.shutdown()
        store.close()


def resume(job_id: str, state_dir: str | Path | None = None, listeners: Sequence[JobListener] = ()) -> JobResult:
    """Finish a job whose coordinator stopped: leased chunks run again, committed parts are kept."""
    from squall.io.output import open_output

    store = JobStore(default_state_dir(str(state_dir) if state_dir else None))
    try:
        job = store.job(job_id)
        store.lock_job(job_id)
        spec = JobSpec.model_validate(job.spec)
        task = JobTask.from_json(job.task)
        storage.configure(task.storage_options, task.locations)
        store.clear_cancel(job_id)
        store.release_leases(job_id)
        with _output_writable(job.output):
            open_output(job.output).remove_final_markers()
        backend = _backend(store, spec, job_id)
        try:
            backend.start(task.model, spec.workers)
            backend.check_reach(_files_left(store, job_id, task), job.output)
            return _drive(store, spec, task, listeners, backend)
        finally:
            backend.shutdown()
    finally:
        store.close()


def redrive(
    job_id: str,
    chunks: Sequence[int] | None = None,
    state_dir: str | Path | None = None,
    overrides: dict[str, object] | None = None,
    listeners: Sequence[JobListener] = (),
) -> JobResult:
    """Put dead chunks back (all, or ``chunks``), optionally with new limits, and finish the job again.

    ``overrides`` may change any spec field that does not change results
    (limits, retries, workers); the manifest is rewritten at the end.
    """
    store = JobStore(default_state_dir(str(state_dir) if state_dir else None))
    try:
        job = store.job(job_id)
        spec = JobSpec.model_validate({**job.spec, **_redrive_overrides(overrides or {})})
        store.lock_job(job_id)
        store.update_spec(job_id, spec.to_json())
        count = store.redrive(job_id, chunks)
        if count == 0:
            raise JobStateError(f"job {job_id} has no dead chunks{'' if chunks is None else f' among {list(chunks)}'} to redrive")
    finally:
        store.close()
    return resume(job_id, state_dir, listeners)


def replay(job_id: str, state_dir: str | Path | None = None, listeners: Sequence[JobListener] = ()) -> JobResult:
    """Run again, with the current model, the rows in ``_errors/`` and the rows of dead chunks.

    Recovered rows become new parts; the replayed error parts are removed at
    finalize; rows that fail again stay in ``_errors/`` with their new reason
    and one more try. Killed midway, ``squall resume`` finishes the replay.
    """
    from squall.failed_rows import failed_rows, replay_chunks

    store = JobStore(default_state_dir(str(state_dir) if state_dir else None))
    try:
        store.lock_job(job_id)
        if is_database_url(store.job(job_id).output):
            raise JobStateError(f"job {job_id} wrote to a table; replay needs a directory output (use `squall redrive` for dead chunks)")
        done = store.done_chunks(job_id)
        rows, owners = failed_rows(done)
        dead = store.redrive(job_id)
        if not rows and not dead:
            raise JobStateError(f"job {job_id} has no error rows and no dead chunks to replay")
        fmt = done[0].chunk.format if done else "parquet"
        size = JobSpec.model_validate(store.job(job_id).spec).chunk_rows
        chunks = replay_chunks(job_id, fmt, rows, done, store.next_chunk_id(job_id), size)
        store.add_replay(job_id, chunks, owners)
    finally:
        store.close()
    return resume(job_id, state_dir, listeners)


def cancel(job_id: str, state_dir: str | Path | None = None) -> None:
    """Ask a running job to stop; its coordinator keeps what was committed and marks it CANCELLED."""
    store = JobStore(default_state_dir(str(state_dir) if state_dir else None))
    try:
        store.request_cancel(job_id)
    finally:
        store.close()


@dataclass(frozen=True)
class DeadChunk:
    """A dead-lettered chunk: what it reads and why each attempt failed."""

    chunk_id: int
    est_rows: int
    pieces: list[dict[str, object]]
    attempts: list[dict[str, object]]


def dead_letters(job_id: str, state_dir: str | Path | None = None) -> list[DeadChunk]:
    """Every dead chunk of ``job_id`` with every attempt's outcome, reason and timings."""
    store = JobStore(default_state_dir(str(state_dir) if state_dir else None))
    try:
        store.job(job_id)
        return [
            DeadChunk(c.chunk_id, c.est_rows, [dict(p.__dict__) for p in c.pieces], store.attempts(job_id, c.chunk_id))
            for c in store.chunks_in_state(job_id, "dead")
        ]
    finally:
        store.close()


_RESULT_FIELDS = {"model", "flavor", "method", "preprocess", "postprocess", "input", "format", "key", "features", "output",
                  "output_format", "prediction_column", "output_columns", "delimiter", "quotechar", "header", "multiline"}


def _redrive_overrides(overrides: dict[str, object]) -> dict[str, object]:
    changed = sorted(set(overrides) & _RESULT_FIELDS)
    if changed:
        raise SpecError(f"a redrive cannot change {changed}: they change results; start a new job instead")
    return overrides


def report(job_id: str, state_dir: str | Path | None = None) -> JobReport:
    """The report of ``job_id``: summary, every invocation, throughput, durations, failures and cost."""
    from squall.observe.forecast import Forecast
    from squall.observe.report import JobReport

    store = JobStore(default_state_dir(str(state_dir) if state_dir else None))
    try:
        return JobReport.load(store, job_id)
    finally:
        store.close()


def status(job_id: str, state_dir: str | Path | None = None) -> JobStatus:
    """Where ``job_id`` stands."""
    store = JobStore(default_state_dir(str(state_dir) if state_dir else None))
    try:
        return JobStatus(store.job(job_id), store.counts(job_id))
    finally:
        store.close()


def jobs(state_dir: str | Path | None = None, limit: int = 20) -> list[JobStatus]:
    """The most recent jobs, newest first."""
    store = JobStore(default_state_dir(str(state_dir) if state_dir else None))
    try:
        return [JobStatus(job, store.counts(job.job_id)) for job in store.recent_jobs(limit)]
    finally:
        store.close()


def limits_of(spec: JobSpec) -> JobLimits:
    """The coordinator's limits as the spec sets them."""
    from squall.coordinator import JobLimits

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


def _reached_files(job_plan: Plan, task: JobTask) -> list[tuple[str, int | None]]:
    """What every worker must read: each input file at its size, and the model's files."""
    files: list[tuple[str, int | None]] = [(info.file.uri, info.file.size) for info in job_plan.files]
    return files + _model_files(task.model)


def _files_left(store: JobStore, job_id: str, task: JobTask) -> list[tuple[str, int | None]]:
    """What the workers of a resumed job must still read: the inputs of its pending chunks, and the model's files."""
    uris = {piece.uri for chunk in store.chunks_in_state(job_id, "pending") for piece in chunk.pieces}
    files: list[tuple[str, int | None]] = [(uri, None) for uri in sorted(uris) if not is_database_url(uri)]
    return files + _model_files(task.model)


def _model_files(model: ModelRef) -> list[tuple[str, int | None]]:
    """The model's files a worker reads (none for code or a database)."""
    return [(uri, None) for uri in (model.uri, model.state_dict) if uri and not is_code_ref(uri) and not is_database_url(uri)]


def _refuse_busy_owner(store: JobStore, output: Output) -> None:
    owner = output.owner()
    if owner and store.has_job(owner) and store.is_running(owner):
        raise JobStateError(f"{output.uri} belongs to job {owner}, which is running; wait for it or `squall cancel {owner}`")


@contextmanager
def _output_writable(uri: str) -> Iterator[None]:
    """Before any work, an output that cannot be written (read-only, full, a file in the way) is a usage
    error naming it, not a traceback."""
    try:
        yield
    except Exception as exc:
        if not isinstance(exc, OSError) and not storage.is_transient(exc):
            raise
        raise OutputUnwritable(
            f"cannot create or write the output {uri} ({exc}); make it writable, or choose another --output"
        ) from None


def _refuse_inputs_inside(job_plan: Plan, output: str) -> None:
    inside = [info.file.uri for info in job_plan.files if info.file.uri.startswith(output.rstrip("/") + "/")]
    if inside:
        raise InputError(f"input {inside[0]} lies inside the output {output}; choose an output outside the inputs")


def _backend(store: JobStore, spec: JobSpec, job_id: str) -> Backend:
    return backend_for(spec, store.state_dir / "jobs" / job_id)


def _drive(
    store: JobStore, spec: JobSpec, task: JobTask, listeners: Sequence[JobListener], backend: Backend
) -> JobResult:
    from squall.observe.logs import JobLog
    from squall.observe.metrics import JobMetrics

    log = JobLog.open(spec.log_file or job_log_path(store.state_dir, task.job_id), spec.log_format, memory_size_mb(spec))
    metrics = JobMetrics()
    try:
        return _coordinate(store, spec, task, [log, metrics, *listeners], backend)
    finally:
        log.close()
        if spec.metrics_file:
            metrics.write(spec.metrics_file)


def job_log_path(state_dir: Path, job_id: str) -> Path:
    """Where a job's log goes when ``log_file`` is not set."""
    return state_dir / "jobs" / job_id / "squall.log"


def _coordinate(
    store: JobStore, spec: JobSpec, task: JobTask, listeners: Sequence[JobListener], backend: Backend
) -> JobResult:
    from squall.coordinator import Coordinator, JobCancelled
    from squall.finalize import finalize_job

    limits = limits_of(spec)
    backend.configure(task)
    batch_sizes = BatchSizeRecorder()
    coordinator = Coordinator(store, backend, task, spec.workers, limits, [*listeners, batch_sizes])
    try:
        coordinator.drive()
    except ModelLoadError as exc:
        store.set_job_state(task.job_id, "FAILED", str(exc))
        raise
    except EnvironmentFault as exc:
        store.release_leases(task.job_id)
        store.set_job_state(task.job_id, "FAILED", str(exc))
        raise
    except (KeyboardInterrupt, SquallError) as exc:
        store.release_leases(task.job_id)
        store.clear_cancel(task.job_id)
        reason = "cancelled" if isinstance(exc, (KeyboardInterrupt, JobCancelled)) else f"stopped: {exc}"
        store.set_job_state(task.job_id, "CANCELLED", f"{reason}; committed parts are kept; `squall resume {task.job_id}` finishes it")
        raise
    except Exception as exc:
        store.release_leases(task.job_id)
        store.set_job_state(task.job_id, "FAILED", f"{type(exc).__name__}: {exc}; `squall resume {task.job_id}` retries")
        raise
    try:
        result = finalize_job(store, task.job_id, limits, coordinator.invocations)
    except Exception as exc:
        if environment_cause(exc) is None and not storage.is_transient(exc):
            raise
        fault = stopped_by_environment(f"cannot finish the output {task.output} ({exc}); every part is committed", task.job_id)
        store.set_job_state(task.job_id, "FAILED", str(fault))
        raise fault from None
    cost = measured_cost(store.invocations(task.job_id), memory_size_mb(spec), PriceTable.of(spec))
    result = replace(result, cost=cost, batch_sizes=batch_sizes.sizes())
    for listener in listeners:
        listener.job_finished(result)
    return result


def _check_model(spec: JobSpec) -> None:
    """Fail before any work on a model that cannot be found, whose flavor is unknown, or that is not trusted."""
    if spec.gpus and os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        raise ModelLoadError("--gpus asks for GPUs but CUDA_VISIBLE_DEVICES is empty (every GPU hidden); unset it or drop --gpus")
    for path, field in ((spec.model, "model"), (spec.state_dict, "state_dict")):
        if path and not is_code_ref(path) and not is_remote(path) and not os.path.exists(path.removeprefix("file://")):
            raise ModelLoadError(f"{path}: no such model file or directory; check `{field}`")
    resolved(_model_ref(spec))


def task_for(spec: JobSpec, job_plan: Plan, part_prefix: str = "") -> JobTask:
    """What every invocation of ``job_plan`` under ``spec`` is given besides its chunk."""
    return JobTask(
        job_id=job_plan.job_id,
        model=_model_ref(spec),
        read_options=job_plan.read_options,
        key=job_plan.key,
        features=job_plan.features,
        batch_size=spec.batch_size,
        batch_format=spec.batch_format,
        preprocess=spec.preprocess,
        postprocess=spec.postprocess,
        output=_output_location(spec),
        output_format=spec.output_format,
        naming=OutputNaming(spec.prediction_column, tuple(spec.output_columns or ()), spec.output_layout),
        part_prefix=part_prefix,
        memory_mb=spec.memory,
        storage_options=storage.connection_options(spec.storage_options, spec.endpoint_url),
        locations=_locations(spec),
    )


def _refuse_incremental_databases(spec: JobSpec) -> None:
    """The ledger tells new input from old by file versions; a query or a table has none."""
    if spec.incremental and any(is_database_url(uri) for uri in (*spec.input, spec.output)):
        raise SpecError("`incremental` needs file inputs and a directory output; drop it for a database input or table")


def _output_location(spec: JobSpec) -> str:
    """The output directory (absolute), or ``DATABASE_URL#table`` for a database table."""
    if is_database_url(spec.output):
        if not spec.table:
            raise SpecError(f"output {spec.output} is a database: set `table` (--table) to the table the predictions go to")
        return f"{spec.output}#{spec.table}"
    if spec.table:
        raise SpecError(f"`table` is only for a database output, and output {spec.output} is a directory; drop `table`")
    return _absolute(spec.output)


def _locations(spec: JobSpec) -> tuple[str, ...]:
    """The job's file locations (databases are reached by their drivers, not fsspec)."""
    every = (*spec.input, _absolute(spec.output), _absolute(spec.model))
    return tuple(uri for uri in every if not is_database_url(uri))


def _configure_storage(spec: JobSpec) -> None:
    storage.configure(storage.connection_options(spec.storage_options, spec.endpoint_url), _locations(spec))


def model_ref(spec: JobSpec) -> ModelRef:
    """The model the workers of ``spec`` load (paths made absolute)."""
    return _model_ref(spec)


def backend_for(spec: JobSpec, log_dir: Path) -> Backend:
    """The workers ``spec`` asks for (its ``backend``, threads, batch format, recycling, fork, GPUs), not started;
    local workers log to ``log_dir``."""
    return open_backend(spec, log_dir)


def _model_ref(spec: JobSpec) -> ModelRef:
    return ModelRef(
        uri=_absolute(spec.model),
        flavor=spec.flavor,
        method=spec.method,
        state_dict=_absolute(spec.state_dict) if spec.state_dict else None,
        output=spec.model_output,
        sha256=spec.model_sha256,
        trust=spec.trust_model,
        device="cuda:0" if (spec.ray_num_gpus if spec.backend == "ray" else spec.gpus) else "cpu",  # its own GPU, as 0
        threads=spec.resolved_threads(),
        storage_options=storage.connection_options(spec.storage_options, spec.endpoint_url),
    )


def _absolute(uri: str) -> str:
    if "://" in uri or is_code_ref(uri) or is_remote(uri):
        return uri
    return os.path.abspath(uri)
