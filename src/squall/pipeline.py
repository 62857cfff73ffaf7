"""The run pipeline: resolve → plan → record → coordinate → finalize, and the ways back into it.

:func:`run` starts a job; :func:`resume` finishes one whose coordinator
stopped; :func:`redrive` and :func:`replay` put failed work back and resume.
Each resolves its spec once (:mod:`squall.resolve`), records the job in the
store with its chunks in one transaction, and lets the coordinator drive the
workers until every chunk is done or dead; finalize then reconciles the
counts and writes the manifest. A job that runs and fails returns a result
with state FAILED; only a real cancel is CANCELLED.
"""

from __future__ import annotations

import logging
import secrets
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

from squall import secrets as job_secrets
from squall.backends.base import Backend
from squall.errors import (
    InputError, JobCancelled, JobStateError, OutputUnwritable, SpecError, SquallError, environment_cause,
)
from squall.io import storage
from squall.models.base import ModelRef
from squall.models.code import is_code_ref
from squall.observe.batchsizes import BatchSizeRecorder
from squall.observe.cost import PriceTable, measured_cost, memory_size_mb
from squall.observe.events import JobListener
from squall.owner_only import private_dir
from squall.resolve import ResolvedJob, backend_for
from squall.runtime.task import JobTask
from squall.spec import JobSpec
from squall.sql.drivers import is_database_url
from squall.states import ChunkState, JobState
from squall.store import JobRecord, JobStore
from squall.errors import stopped_by_environment

if TYPE_CHECKING:
    from squall.io.output import Output
    from squall.limits import JobLimits
    from squall.observe.forecast import Forecast
    from squall.observe.metrics import JobMetrics
    from squall.plan.planner import Plan
    from squall.result import JobResult

# The planner, coordinator and committer pull in pyarrow and fsspec; they are imported
# inside the functions below so that workers start loading the model first.


def new_job_id() -> str:
    """A fresh, sortable job id: UTC time plus a random suffix long enough that ids made in the same second
    (hundreds of jobs posted at once to ``squall serve``) do not collide."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(4)


def plan(spec: JobSpec, job_id: str | None = None) -> Plan:
    """The chunks ``spec`` would run, without running anything."""
    from squall.plan.planner import make_plan

    job = ResolvedJob.of(spec)
    job.check()
    job.configure_storage()
    return make_plan(spec, job_id or spec.job_id or "dry-run")


def forecast(job_plan: Plan, spec: JobSpec) -> Forecast:
    """What ``job_plan`` will take and cost, at the speed the newest job with the same model measured."""
    from squall.observe.forecast import forecast as make_forecast
    from squall.observe.forecast import measured_speed

    with JobStore.at(spec.state_dir) as store:
        return make_forecast(job_plan, spec, measured_speed(store, spec))


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

    Secrets in ``spec`` are kept in memory only (:mod:`squall.secrets`); a
    spec holding ``***`` where a secret was (one read back from a store) gets
    it from the environment, or raises :class:`squall.errors.SecretsMissing`.
    """
    job_id = job_id or spec.job_id or new_job_id()
    job_secrets.remember(spec.model_dump())
    # Only the fields the caller set: a default must stay a default (a .tsv input is tab-separated unless
    # `delimiter` was given).
    spec = JobSpec.model_validate(job_secrets.restore(spec.model_dump(exclude_unset=True), whose=f"job {job_id}"))
    job = ResolvedJob.of(spec)
    with JobStore.at(spec.state_dir) as store:
        backend = backend or backend_for(spec, job_dir(store.state_dir, job_id))
        try:
            if store.has_job(job_id):
                raise JobStateError(f"a job named {job_id!r} already exists; pick another --job-id or `squall resume {job_id}`")
            job.check()
            job.configure_storage()
            backend.start(job.model, spec.workers)  # workers load the model while we plan
            task = _record(store, job, job_id, backend)
            return _drive(store, spec, task, listeners, backend)
        finally:
            backend.shutdown()


def _record(store: JobStore, job: ResolvedJob, job_id: str, backend: Backend) -> JobTask:
    """Plan the job, claim its output and record it with its chunks (all or nothing); returns its task."""
    from squall.io import layout
    from squall.io.output import open_output
    from squall.ledger import Ledger, Selection
    from squall.plan.planner import make_plan

    spec = job.spec
    output = open_output(job.output)
    _refuse_busy_owner(store, output)
    previous = output.manifest() if spec.incremental else None
    selection = Selection(spec, Ledger.from_manifest(previous) if previous else None)
    job_plan = make_plan(spec, job_id, only=selection)
    assert selection.increment is not None
    task = job.task(job_plan, layout.run_prefix(selection.increment.run) if spec.incremental else "")
    _refuse_inputs_inside(job_plan, task.output)
    backend.check_reach(_reached_files(job_plan, task), task.output)
    with _output_writable(output.uri):
        storage.retrying(lambda: output.claim(job_id, spec.overwrite, spec.incremental))
    store.lock_job(job_id)
    store.create_job(job_id, spec.to_json(), task.to_json(), task.output, job_plan.chunks, selection.increment.to_json(),
                     output_schema=_kept_schema(previous, job.output))
    return task


def resume(
    job_id: str, state_dir: str | Path | None = None, listeners: Sequence[JobListener] = (),
    storage_options: Mapping[str, Any] | None = None,
) -> JobResult:
    """Finish a job whose coordinator stopped: leased chunks run again, committed parts are kept.

    The job's secrets were not stored: ``storage_options`` gives them again
    (merged over the stored options), else they come from this process's
    memory or the environment (:func:`squall.secrets.restore`); a secret
    found nowhere raises :class:`squall.errors.SecretsMissing` before any work.
    """
    from squall.io.output import open_output

    with JobStore.at(state_dir) as store:
        record = store.job(job_id)
        store.lock_job(job_id)
        spec = _restored_spec(record, storage_options)
        job = ResolvedJob.of(spec)
        job.check()
        task = _restored_task(JobTask.from_json(record.task), spec)
        storage.configure(task.storage_options, task.locations)
        store.clear_cancel(job_id)
        store.release_leases(job_id)
        with _output_writable(task.output):
            open_output(task.output).remove_final_markers()
        backend = backend_for(spec, job_dir(store.state_dir, job_id))
        try:
            backend.start(task.model, spec.workers)
            backend.check_reach(_files_left(store, job_id, task), task.output)
            return _drive(store, spec, task, listeners, backend)
        finally:
            backend.shutdown()


def redrive(
    job_id: str,
    chunks: Sequence[int] | None = None,
    state_dir: str | Path | None = None,
    overrides: dict[str, object] | None = None,
    listeners: Sequence[JobListener] = (),
    storage_options: Mapping[str, Any] | None = None,
) -> JobResult:
    """Put dead chunks back (all, or ``chunks``), optionally with new limits, and finish the job again.

    ``overrides`` may change any spec field that does not change results
    (limits, retries, workers); one that does (:data:`squall.ledger.FIXED_FIELDS`)
    raises :class:`SpecError`, and a job with no dead chunks (among ``chunks``)
    raises :class:`JobStateError`, both before anything changes. The manifest
    is rewritten at the end. ``storage_options`` gives the job's secrets again,
    as for :func:`resume`.
    """
    with JobStore.at(state_dir) as store:
        record = store.job(job_id)
        _restored_spec(record, storage_options)  # a secret found nowhere stops the redrive before it changes anything
        spec = _redriven_spec(record.spec, overrides or {})
        store.lock_job(job_id)
        dead = {chunk.chunk_id for chunk in store.chunks_in_state(job_id, ChunkState.DEAD)}
        if not (dead if chunks is None else dead & set(chunks)):
            raise JobStateError(f"job {job_id} has no dead chunks{'' if chunks is None else f' among {list(chunks)}'} to redrive")
        store.update_spec(job_id, spec.to_json())
        store.redrive(job_id, chunks)
    return resume(job_id, state_dir, listeners, storage_options)


def replay(
    job_id: str, state_dir: str | Path | None = None, listeners: Sequence[JobListener] = (),
    storage_options: Mapping[str, Any] | None = None,
) -> JobResult:
    """Run again, with the current model, the rows in ``_errors/`` and the rows of dead chunks.

    Recovered rows become new parts; the replayed error parts are removed at
    finalize; rows that fail again stay in ``_errors/`` with their new reason
    and one more try. Killed midway, ``squall resume`` finishes the replay.
    ``storage_options`` gives the job's secrets again, as for :func:`resume`.
    """
    from squall.failed_rows import failed_rows, replay_chunks

    with JobStore.at(state_dir) as store:
        store.lock_job(job_id)
        record = store.job(job_id)
        _restored_spec(record, storage_options)  # before the replay chunks are queued
        if is_database_url(record.output):
            raise JobStateError(f"job {job_id} wrote to a table; replay needs a directory output (use `squall redrive` for dead chunks)")
        done = store.done_chunks(job_id)
        rows, owners = failed_rows(done)
        dead = store.redrive(job_id)
        if not rows and not dead:
            raise JobStateError(f"job {job_id} has no error rows and no dead chunks to replay")
        fmt = done[0].chunk.format if done else "parquet"
        size = JobSpec.model_validate(record.spec).chunk_rows
        store.add_replay(job_id, replay_chunks(job_id, fmt, rows, done, store.next_chunk_id(job_id), size), owners)
    return resume(job_id, state_dir, listeners, storage_options)


def cancel(job_id: str, state_dir: str | Path | None = None) -> None:
    """Ask a running job to stop; its coordinator keeps what was committed and marks it CANCELLED."""
    with JobStore.at(state_dir) as store:
        store.request_cancel(job_id)


def options_given(spec: JobSpec) -> dict[str, Any]:
    """``spec``'s storage options and endpoint, as ``resume(storage_options=…)`` takes them to give a stored job
    its secrets again."""
    return {**spec.storage_options, **({"endpoint_url": spec.endpoint_url} if spec.endpoint_url else {})}


def job_dir(state_dir: Path, job_id: str) -> Path:
    """The job's own folder in the state folder (its log, its workers' logs), made owner-only."""
    return private_dir(private_dir(state_dir / "jobs") / job_id)


def job_log_path(state_dir: Path, job_id: str) -> Path:
    """Where a job's log goes when ``log_file`` is not set."""
    return state_dir / "jobs" / job_id / "squall.log"


def _redriven_spec(stored: dict[str, Any], overrides: dict[str, object]) -> JobSpec:
    """The job's spec with ``overrides``, refused if they change a field its committed parts were made with."""
    from squall.ledger import FIXED_FIELDS

    before = JobSpec.model_validate(stored)
    after = JobSpec.model_validate({**stored, **overrides})
    changed = [name for name in FIXED_FIELDS if getattr(after, name) != getattr(before, name)]
    if changed:
        raise SpecError(
            f"a redrive cannot change {', '.join(f'`{name}`' for name in changed)}: the committed parts were made "
            "with the old value, so the output would mix results; start a new job instead"
        )
    return after


def _restored_spec(job: JobRecord, storage_options: Mapping[str, Any] | None) -> JobSpec:
    """The stored (redacted) spec of ``job`` with its secrets given back (see :func:`resume`)."""
    restored = job_secrets.restore(job.spec, storage_options, whose=f"job {job.job_id}")
    job_secrets.remember(restored)
    return JobSpec.model_validate(restored)


def _restored_task(task: JobTask, spec: JobSpec) -> JobTask:
    """The stored task with the credentials it was stored without, from the restored ``spec``."""
    options = storage.connection_options(spec.storage_options, spec.endpoint_url)
    return replace(
        task, storage_options=options, model=replace(task.model, storage_options=options),
        output=job_secrets.reveal_url(task.output), locations=tuple(job_secrets.reveal_url(uri) for uri in task.locations),
    )


def _kept_schema(manifest: dict[str, Any] | None, output: str) -> str | None:
    """The output schema of the parts an incremental run keeps (the first listed Parquet part's), so that the
    new parts are cast to it; ``None`` for a first run."""
    from squall.io.output_schema import schema_text

    parts = [entry["path"] for entry in (manifest or {}).get("parts", []) if str(entry.get("path", "")).endswith(".parquet")]
    if not parts:
        return None
    import fsspec
    import pyarrow.parquet as pq

    with fsspec.open(f"{output.rstrip('/')}/{parts[0]}", "rb") as handle:
        return schema_text(pq.read_schema(handle))


def _reached_files(job_plan: Plan, task: JobTask) -> list[tuple[str, int | None]]:
    """What every worker must read: each input file at its size, and the model's files."""
    files: list[tuple[str, int | None]] = [(info.file.uri, info.file.size) for info in job_plan.files]
    return files + _model_files(task.model)


def _files_left(store: JobStore, job_id: str, task: JobTask) -> list[tuple[str, int | None]]:
    """What the workers of a resumed job must still read: the inputs of its pending chunks, and the model's files."""
    uris = {piece.uri for chunk in store.chunks_in_state(job_id, ChunkState.PENDING) for piece in chunk.pieces}
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


def _drive(
    store: JobStore, spec: JobSpec, task: JobTask, listeners: Sequence[JobListener], backend: Backend
) -> JobResult:
    from squall.observe.logs import JobLog
    from squall.observe.metrics import JobMetrics

    job_dir(store.state_dir, task.job_id)
    log = JobLog.open(spec.log_file or job_log_path(store.state_dir, task.job_id), spec.log_format, memory_size_mb(spec))
    metrics = JobMetrics()
    try:
        return _coordinate(store, spec, task, [log, metrics, *listeners], backend)
    finally:
        log.close()
        if spec.metrics_file:
            _write_metrics(metrics, spec.metrics_file)


def _write_metrics(metrics: JobMetrics, path: str) -> None:
    """Write the job's metrics file; a file that cannot be written is a warning, never the job's outcome."""
    try:
        metrics.write(path)
    except OSError as exc:
        logging.getLogger("squall").warning(
            "warning: the metrics file %s (`metrics_file`) was not written: %s; the job's result stands", path,
            exc.strerror or exc,
        )


def _coordinate(
    store: JobStore, spec: JobSpec, task: JobTask, listeners: Sequence[JobListener], backend: Backend
) -> JobResult:
    from squall.coordinator import Coordinator
    from squall.resolve import limits_of

    limits = limits_of(spec)
    backend.configure(task)
    batch_sizes = BatchSizeRecorder()
    coordinator = Coordinator(store, backend, task, spec.workers, limits, [*listeners, batch_sizes])
    try:
        coordinator.drive()
        for listener in listeners:
            listener.job_finalizing(task.job_id)
        result = _finalize(store, task, limits, coordinator.invocations, spec.min_part_bytes)
    except (KeyboardInterrupt, JobCancelled) as exc:
        _record_stop(store, task.job_id, JobState.CANCELLED, "cancelled", exc)
        raise
    except SquallError as exc:
        _record_stop(store, task.job_id, JobState.FAILED, str(exc), exc)
        raise
    except Exception as exc:
        _record_stop(store, task.job_id, JobState.FAILED, f"{type(exc).__name__}: {exc}", exc)
        raise
    cost = measured_cost(store.invocations(task.job_id), memory_size_mb(spec), PriceTable.of(spec))
    result = replace(result, cost=cost, batch_sizes=batch_sizes.sizes())
    for listener in listeners:
        listener.job_finished(result)
    return result


def _finalize(store: JobStore, task: JobTask, limits: JobLimits, invocations: int, min_part_bytes: int) -> JobResult:
    """Finalize the job; an output that fills up or turns read-only meanwhile stops it with that reason."""
    from squall.finalize import finalize_job

    try:
        return finalize_job(store, task.job_id, limits, invocations, min_part_bytes, task.part_prefix)
    except Exception as exc:
        if environment_cause(exc) is None and not storage.is_transient(exc):
            raise
        raise stopped_by_environment(f"cannot finish the output {task.output} ({exc}); every part is committed", task.job_id) from None


def _record_stop(store: JobStore, job_id: str, state: JobState, reason: str, cause: BaseException) -> None:
    """Record why a job stopped before it was finalized: ``CANCELLED`` for a cancel (``squall cancel``,
    Ctrl-C, SIGTERM), ``FAILED`` with the reason for anything else. Leased chunks go back to pending, and
    a ``_SUCCESS`` an interrupted finalize wrote is withdrawn, so ``squall resume`` finishes the job. A job
    that finalize already ended keeps its state; a store that cannot record the stop does not hide ``cause``."""
    from squall.io.output import open_output

    try:
        job = store.job(job_id)
        if not JobState(job.state).active:
            return
        try:
            open_output(job.output).remove_final_markers()
        except OSError:
            pass  # a full or read-only output keeps no _SUCCESS of this run: finalize could not have written it
        store.release_leases(job_id)
        store.clear_cancel(job_id)
        advice = "" if "squall resume" in reason else f"; committed parts are kept; `squall resume {job_id}` finishes it"
        store.set_job_state(job_id, state, reason + advice)
    except Exception as exc:  # the store itself may be what failed: say so, and let ``cause`` propagate
        logging.getLogger("squall").error("could not record job %s as %s (%s: %s) after: %s", job_id, state,
                                          type(exc).__name__, exc, cause)
