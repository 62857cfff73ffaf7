"""The job's one output schema: every part of a job has it, so a reader of the whole output gets one table.

pandas, Polars and DuckDB read a folder of parts as one table only when the
parts agree on their types. The first committed part fixes the job's schema,
workers receive it with each invocation, and :func:`conform` casts each batch
to it, safely; a row whose value the cast would change becomes an error row.
Schemas travel and are stored as :func:`schema_text`.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from squall.errors import OutputShapeError


@dataclass(frozen=True)
class Uncastable:
    """A row of a batch whose value in ``column`` cannot be cast safely to the output schema."""

    row: int
    column: str
    message: str


def conform(batch: pa.RecordBatch, schema: pa.Schema, uri: str) -> tuple[pa.RecordBatch, list[Uncastable]]:
    """``batch`` in ``schema`` (a model may return ints for one batch and floats for another), without the
    rows whose values a safe cast would change (``0.5`` into ``int64``), which are returned as :class:`Uncastable`.
    Raises :class:`OutputShapeError` when the columns are not the schema's."""
    if batch.schema.names != schema.names:
        raise OutputShapeError(f"{uri}: a batch has columns {batch.schema.names}, the part has {schema.names}")
    if batch.schema.equals(schema):
        return batch, []
    failed = np.zeros(batch.num_rows, dtype=bool)
    rejected: dict[int, Uncastable] = {}
    for index, target in enumerate(schema):
        column = batch.column(index)
        if column.type == target.type:
            continue
        bad = _uncastable_rows(column, target.type)
        for row in np.flatnonzero(bad & ~failed):
            value = column[int(row)].as_py()
            rejected[int(row)] = Uncastable(
                int(row), target.name,
                f"column {target.name!r}: {value!r} ({column.type}) cannot be cast safely to the job's output type "
                f"{target.type}",
            )
        failed |= bad
    kept = batch.filter(pa.array(~failed)) if failed.any() else batch
    columns = [pc.cast(kept.column(i), field.type, safe=True) for i, field in enumerate(schema)]
    return pa.RecordBatch.from_arrays(columns, schema=schema), [rejected[row] for row in sorted(rejected)]


def _uncastable_rows(column: pa.Array, target: pa.DataType) -> np.ndarray:
    """Which values of ``column`` a safe cast to ``target`` refuses (nulls always cast)."""
    try:
        pc.cast(column, target, safe=True)
        return np.zeros(len(column), dtype=bool)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    return np.array([not _casts(value, target) for value in column], dtype=bool)


def _casts(value: pa.Scalar, target: pa.DataType) -> bool:
    try:
        value.cast(target, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return False
    return True


def schema_text(schema: pa.Schema) -> str:
    """``schema`` (without metadata) as text that crosses processes and is stored with the job."""
    return base64.b64encode(schema.remove_metadata().serialize().to_pybytes()).decode()


def schema_from_text(text: str) -> pa.Schema:
    """The schema :func:`schema_text` wrote."""
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text)))
