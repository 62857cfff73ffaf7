"""One invocation: read a chunk as Arrow batches → preprocess → predict → postprocess → write one attempt part.

A batch that raises is bisected until the rows that raise are isolated; they
become error rows (``_errors/``) and every other row is predicted. Every
batch written is cast to one schema: the job's output schema when the
coordinator sent it, else the chunk's first batch's; a row that cannot be cast
safely is an error row of step ``output``. An invocation never raises:
whatever happens becomes its ``InvocationReport``.
"""

from __future__ import annotations

import json
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.compute as pc

from squall.errors import EnvironmentFault, ErrorBudgetExceeded, ErrorInfo, InputError, SquallError, environment_cause, is_retryable
from squall.formats.base import OFFSET_COLUMN, SOURCE_COLUMN, BadRecord
from squall.formats.registry import get_format
from squall.io.output import Output, PartSink, open_output
from squall.io.output_schema import Uncastable, conform, schema_from_text, schema_text
from squall.io.part_formats import extension_of
from squall.models.base import LoadedModel
from squall.models.code import resolve
from squall.plan.chunk import Chunk
from squall.runtime.batching import BatchSizer
from squall.runtime.peak_memory import peak_mb, reset_peak
from squall.runtime.predictions import to_columns, to_model_input
from squall.runtime.task import InvocationReport, JobTask
from squall.states import Outcome

ERROR_SCHEMA = pa.schema(
    [
        (SOURCE_COLUMN, pa.string()),
        (OFFSET_COLUMN, pa.int64()),
        ("key", pa.string()),
        ("step", pa.string()),
        ("error_type", pa.string()),
        ("message", pa.string()),
        ("chunk", pa.int64()),
        ("attempt", pa.int64()),
        ("tries", pa.int64()),
    ]
)


class _StepFailed(Exception):
    def __init__(self, step: str, cause: BaseException) -> None:
        super().__init__(f"{step}: {type(cause).__name__}: {cause}")
        self.step = step
        self.cause = cause


@dataclass
class Steps:
    """The per-batch pipeline of a job, resolved once per worker, and the worker's batch size."""

    model: LoadedModel
    preprocess: Callable[[Any], Any] | None = None
    postprocess: Callable[[Any], Any] | None = None
    batch_format: str = "pandas"
    vector: bool = False
    sizer: BatchSizer = field(default_factory=lambda: BatchSizer(65536))
    output: Output | None = None  # where the parts go, opened once (None: opened per invocation)

    @classmethod
    def for_task(cls, task: JobTask, model: LoadedModel) -> Steps:
        pre = resolve(task.preprocess, "preprocess") if task.preprocess else None
        post = resolve(task.postprocess, "postprocess") if task.postprocess else None
        fixed = task.batch_size if isinstance(task.batch_size, int) else None
        return cls(
            model,
            pre,
            post,
            batch_format=task.batch_format if task.batch_format != "auto" else model.batch_format,
            vector=task.naming.layout == "vector" or (task.naming.layout == "auto" and model.vector_output),
            sizer=BatchSizer(fixed, task.memory_mb),
            output=open_output(task.output),
        )


@dataclass
class _Invocation:
    task: JobTask
    chunk: Chunk
    attempt: int
    steps: Steps
    part: PartSink
    errors: PartSink
    schema: pa.Schema | None = None
    rows_in: int = 0
    failed_rows: int = 0

    @property
    def error_budget(self) -> int:
        """Rows of one chunk that may fail before the model, not the data, is blamed (and bisection stops)."""
        return max(256, self.chunk.est_rows // 20)

    @classmethod
    def open(cls, task: JobTask, chunk: Chunk, attempt: int, steps: Steps, schema: pa.Schema | None) -> _Invocation:
        """An invocation whose part and error files are named for this attempt (opened on first write)."""
        ext = extension_of(task.output_format)
        output = steps.output or open_output(task.output)
        part = output.attempt_part(chunk.chunk_id, attempt, ext, task.part_prefix)
        errors = output.attempt_errors(chunk.chunk_id, attempt, task.part_prefix)
        return cls(
            task, chunk, attempt, steps, output.part_sink(part, task.output_format), output.part_sink(errors, "parquet"),
            schema,
        )


def invoke(
    task: JobTask, chunk: Chunk, attempt: int, worker: int, steps: Steps, output_schema: str | None = None
) -> InvocationReport:
    """Run one chunk and report; the part is written under its attempt name, never committed here.

    ``output_schema`` (:func:`squall.io.output_schema.schema_text`) is the job's, once its first part is committed;
    the report names the schema the part was written in."""
    reset_peak()
    started, clock = time.time(), time.perf_counter()
    run = _Invocation.open(task, chunk, attempt, steps, schema_from_text(output_schema) if output_schema else None)
    try:
        _read_and_predict(run)
        part, error_part = run.part.close(), run.errors.close()
    except Exception as exc:  # the report carries it; an invocation must never take its worker down
        run.part.abandon()
        run.errors.abandon()
        cause = environment_cause(exc)
        reported = EnvironmentFault(f"{cause} (chunk {chunk.chunk_id}, output {task.output})") if cause else exc
        return InvocationReport(
            job_id=task.job_id,
            chunk_id=chunk.chunk_id,
            attempt=attempt,
            worker=worker,
            started_at=started,
            outcome=Outcome.ERROR,
            rows_in=run.rows_in,
            duration_s=time.perf_counter() - clock,
            max_rss_mb=peak_mb(),
            error=ErrorInfo.from_exception(reported, traceback.format_exc()),
            retryable=is_retryable(exc) and cause is None,
            environment_fault=cause is not None,
        )
    return InvocationReport(
        job_id=task.job_id,
        chunk_id=chunk.chunk_id,
        attempt=attempt,
        worker=worker,
        started_at=started,
        outcome=Outcome.OK,
        rows_in=run.rows_in,
        rows_out=run.part.rows,
        error_rows=run.errors.rows,
        part=part,
        error_part=error_part,
        duration_s=time.perf_counter() - clock,
        max_rss_mb=peak_mb(),
        batch_size=steps.sizer.current,
        part_schema=schema_text(run.schema) if part and run.schema is not None else None,
    )


def _read_and_predict(run: _Invocation) -> None:
    fmt = get_format(run.chunk.format)
    for piece in run.chunk.pieces:
        bad: list[BadRecord] = []
        for batch in _still_there(fmt.read(piece, run.task.read_options, run.steps.sizer.read_rows, bad), piece.uri):
            batch = _only_listed(batch, piece.offsets)
            run.rows_in += batch.num_rows
            for model_batch in run.steps.sizer.slices(batch):
                _timed_predict(run, model_batch, piece.uri)
        if piece.offsets:
            wanted = set(piece.offsets)
            bad = [record for record in bad if record.offset in wanted]
        run.rows_in += len(bad)
        _write_bad_records(run, piece.uri, bad)


def _still_there(batches: Iterator[pa.RecordBatch], uri: str) -> Iterator[pa.RecordBatch]:
    """``batches``; an input file removed since the job was planned is an :class:`InputError` (retrying cannot help)."""
    try:
        yield from batches
    except FileNotFoundError:
        raise InputError(f"{uri}: the input file was removed after the job was planned; restore it and redrive") from None


def _timed_predict(run: _Invocation, batch: pa.RecordBatch, source: str) -> None:
    """Predict one model batch and, while the worker is still choosing its batch size, tell the sizer how it went."""
    sizer = run.steps.sizer
    clock = time.perf_counter()
    _predict_batch(run, batch, source)
    if not sizer.settled:
        sizer.observe(batch.num_rows, time.perf_counter() - clock, psutil.Process().memory_info().rss / 2**20)


def _only_listed(batch: pa.RecordBatch, offsets: tuple[int, ...]) -> pa.RecordBatch:
    """The rows a replay piece asks for (all rows when it lists none)."""
    if not offsets:
        return batch
    return batch.filter(pc.is_in(batch.column(OFFSET_COLUMN), value_set=pa.array(offsets, pa.int64())))


def _predict_batch(run: _Invocation, batch: pa.RecordBatch, source: str) -> None:
    good: list[tuple[int, list[tuple[str, pa.Array]]]] = []
    failed: list[tuple[int, _StepFailed]] = []
    _isolate(run, batch, 0, batch.num_rows, good, failed)
    if good:
        ok = np.zeros(batch.num_rows, dtype=bool)
        for start, columns in good:
            ok[start : start + len(columns[0][1])] = True
        names = [name for name, _ in good[0][1]]
        predictions = [pa.concat_arrays([cols[i][1] for _, cols in good]) for i in range(len(names))]
        predicted = batch.filter(pa.array(ok))
        identity = _identity(run, predicted, source)
        out = pa.RecordBatch.from_arrays([*identity.columns, *predictions], names=[*identity.schema.names, *names])
        _write_in_schema(run, out, predicted, source)
    if failed:
        _write_failed_rows(run, batch, source, failed)


def _write_in_schema(run: _Invocation, out: pa.RecordBatch, predicted: pa.RecordBatch, source: str) -> None:
    """Write ``out`` cast to the part's schema (the first batch's, when the job has none yet); rows that do not
    cast safely become error rows (``predicted`` holds their input rows)."""
    if run.schema is None:
        run.schema = out.schema
    out, uncastable = conform(out, run.schema, run.part.uri)
    run.part.write(out)
    if uncastable:
        _write_uncastable_rows(run, predicted, source, uncastable)


def _write_uncastable_rows(run: _Invocation, predicted: pa.RecordBatch, source: str, rows: list[Uncastable]) -> None:
    indices = [row.row for row in rows]
    keys = _key_text(run, predicted, indices)
    offsets = predicted.column(OFFSET_COLUMN).take(pa.array(indices, pa.int64())).to_pylist()
    records = [
        (offset, key, "output", "OutputTypeError", row.message) for offset, key, row in zip(offsets, keys, rows)
    ]
    _write_errors(run, source, records)


def _isolate(
    run: _Invocation,
    batch: pa.RecordBatch,
    lo: int,
    hi: int,
    good: list[tuple[int, list[tuple[str, pa.Array]]]],
    failed: list[tuple[int, _StepFailed]],
) -> None:
    """Predict rows ``[lo, hi)``; on failure, bisect until each failing row stands alone."""
    try:
        good.append((lo, _predict_rows(run, batch.slice(lo, hi - lo))))
        return
    except _StepFailed as failure:
        if hi - lo == 1:
            failed.append((lo, failure))
            run.failed_rows += 1
            if run.failed_rows > run.error_budget:
                raise ErrorBudgetExceeded(
                    f"more than {run.error_budget} rows of one chunk failed; first: {failed[0][1]}"
                ) from failure.cause
            return
    mid = (lo + hi) // 2
    _isolate(run, batch, lo, mid, good, failed)
    _isolate(run, batch, mid, hi, good, failed)


def _predict_rows(run: _Invocation, batch: pa.RecordBatch) -> list[tuple[str, pa.Array]]:
    steps, task = run.steps, run.task
    data = to_model_input(batch, task.features, steps.batch_format)
    if steps.preprocess is not None:
        data = _step("preprocess", steps.preprocess, data)
    output = _step("predict", steps.model.call, data)
    if steps.postprocess is not None:
        output = _step("postprocess", steps.postprocess, output)
    try:
        return to_columns(output, batch.num_rows, task.naming, steps.model.labels, steps.vector)
    except SquallError as exc:
        raise _StepFailed("predict", exc) from exc


def _step(name: str, function: Callable[[Any], Any], data: Any) -> Any:
    try:
        return function(data)
    except Exception as exc:
        raise _StepFailed(name, exc) from exc


def _identity(run: _Invocation, batch: pa.RecordBatch, source: str) -> pa.RecordBatch:
    if run.task.key:
        return batch.select(list(run.task.key))
    sources = pa.repeat(pa.scalar(source, pa.string()), batch.num_rows)
    return pa.RecordBatch.from_arrays(
        [sources, batch.column(OFFSET_COLUMN)], names=[SOURCE_COLUMN, OFFSET_COLUMN]
    )


def _write_failed_rows(
    run: _Invocation, batch: pa.RecordBatch, source: str, failed: list[tuple[int, _StepFailed]]
) -> None:
    rows = [index for index, _ in failed]
    keys = _key_text(run, batch, rows)
    offsets = batch.column(OFFSET_COLUMN).take(pa.array(rows)).to_pylist()
    records = [
        (offset, key, failure.step, type(failure.cause).__name__, str(failure.cause))
        for offset, key, (_, failure) in zip(offsets, keys, failed)
    ]
    _write_errors(run, source, records)


def _write_bad_records(run: _Invocation, source: str, bad: list[BadRecord]) -> None:
    _write_errors(run, source, [(b.offset, None, "read", b.error_type, b.message) for b in bad])


def _write_errors(run: _Invocation, source: str, records: list[tuple[int, str | None, str, str, str]]) -> None:
    if not records:
        return
    offsets, keys, steps, types, messages = (list(column) for column in zip(*records))
    count = len(records)
    run.errors.write(
        pa.RecordBatch.from_arrays(
            [
                pa.array([source] * count, pa.string()),
                pa.array(offsets, pa.int64()),
                pa.array(keys, pa.string()),
                pa.array(steps, pa.string()),
                pa.array(types, pa.string()),
                pa.array(messages, pa.string()),
                pa.array([run.chunk.chunk_id] * count, pa.int64()),
                pa.array([run.attempt] * count, pa.int64()),
                pa.array([run.chunk.tries] * count, pa.int64()),
            ],
            schema=ERROR_SCHEMA,
        )
    )


def _key_text(run: _Invocation, batch: pa.RecordBatch, rows: list[int]) -> list[str | None]:
    if not run.task.key:
        return [None] * len(rows)
    picked = batch.select(list(run.task.key)).take(pa.array(rows)).to_pylist()
    return [json.dumps(row, default=str) for row in picked]
