"""Part writers: one output file per chunk attempt, in the job's output format; and the job's one output schema.

Adding an output format is one writer class and one line in ``_WRITERS``.

Every part of a job has one schema, so that a reader of the whole output
(pandas, Polars, DuckDB) gets one table: the first committed part fixes it,
workers receive it with each invocation, and :func:`conform` casts each batch
to it, safely; a row whose value the cast would change becomes an error row.
Schemas travel and are stored as :func:`schema_text`.
"""

from __future__ import annotations

import base64
import contextlib
import json
from dataclasses import dataclass
from typing import Any, Protocol

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from squall.runtime.predictions import OutputShapeError


class PartWriter(Protocol):
    """Writes record batches that share one schema to one file; ``close`` makes the file complete."""

    def write(self, batch: pa.RecordBatch) -> None: ...

    def close(self) -> None: ...


class ParquetPartWriter:
    """A zstd-compressed Parquet file.

    Dictionary encoding is kept for text-like columns only: on float predictions
    it is tried, fails and costs four times the rest of the write.
    """

    def __init__(self, handle: Any, schema: pa.Schema) -> None:
        textual = [f.name for f in schema if not (pa.types.is_floating(f.type) or pa.types.is_integer(f.type))]
        self._writer = pq.ParquetWriter(handle, schema, compression="zstd", use_dictionary=textual or False)

    def write(self, batch: pa.RecordBatch) -> None:
        self._writer.write_batch(batch)

    def close(self) -> None:
        self._writer.close()


class CsvPartWriter:
    """A CSV file with a header line; a list column (an embedding, say) is written as JSON arrays."""

    def __init__(self, handle: Any, schema: pa.Schema) -> None:
        self._nested = [i for i, f in enumerate(schema) if pa.types.is_nested(f.type)]
        for index in self._nested:
            schema = schema.set(index, pa.field(schema.field(index).name, pa.string()))
        self._writer = pacsv.CSVWriter(handle, schema)

    def write(self, batch: pa.RecordBatch) -> None:
        for index in self._nested:
            text = pa.array([None if v is None else json.dumps(v, default=str) for v in batch.column(index).to_pylist()], pa.string())
            batch = batch.set_column(index, batch.schema.field(index).name, text)
        self._writer.write_batch(batch)

    def close(self) -> None:
        self._writer.close()


class JsonlPartWriter:
    """One JSON object per line; floats are written exactly (shortest round-trip form)."""

    def __init__(self, handle: Any, schema: pa.Schema) -> None:
        self._handle = handle

    def write(self, batch: pa.RecordBatch) -> None:
        lines = [json.dumps(row, default=str, allow_nan=True) for row in batch.to_pylist()]
        self._handle.write(("\n".join(lines) + "\n").encode())

    def close(self) -> None:
        return None


_WRITERS: dict[str, type] = {"parquet": ParquetPartWriter, "csv": CsvPartWriter, "jsonl": JsonlPartWriter}
EXTENSIONS = {"parquet": "parquet", "csv": "csv", "jsonl": "jsonl"}


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


def count_rows(handle: Any, uri: str) -> int:
    """The rows in the part file ``uri`` (open as ``handle``), from what is on storage: a Parquet file's
    footer, a CSV file's records less its header (quoted line breaks kept in their record), a JSONL
    file's lines."""
    if uri.endswith(".parquet"):
        return int(pq.ParquetFile(handle).metadata.num_rows)
    if uri.endswith(".csv"):
        return _csv_records(handle)
    if uri.endswith(".jsonl"):
        return sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 20), b""))
    raise ValueError(f"{uri}: not a part file squall writes (.parquet, .csv, .jsonl)")


def _csv_records(handle: Any) -> int:
    """Parse the records without converting more than their first field (as text)."""
    reader = pacsv.open_csv(
        handle,
        read_options=pacsv.ReadOptions(skip_rows=1, autogenerate_column_names=True, block_size=1 << 24),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(include_columns=["f0"], column_types={"f0": pa.string()}),
    )
    return sum(batch.num_rows for batch in reader)


class PartFile:
    """An output file opened on first write, so that a chunk with no rows leaves no file."""

    def __init__(self, uri: str, output_format: str) -> None:
        self.uri = uri
        self.rows = 0
        self._format = output_format
        self._opened: Any = None
        self._writer: PartWriter | None = None
        self._schema: pa.Schema | None = None

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        if self._writer is None:
            self._opened = fsspec.open(self.uri, "wb", auto_mkdir=True)
            handle = self._opened.__enter__()
            self._schema = batch.schema
            self._writer = _WRITERS[self._format](handle, batch.schema)
        if not batch.schema.equals(self._schema):
            raise OutputShapeError(f"{self.uri}: a batch's schema {batch.schema} is not the part's {self._schema}")
        self._writer.write(batch)
        self.rows += batch.num_rows

    def close(self) -> str | None:
        """Finish the file; returns its URI, or ``None`` when nothing was written."""
        if self._writer is None:
            return None
        self._writer.close()
        self._opened.__exit__(None, None, None)
        return self.uri

    def abandon(self) -> None:
        """Close without caring whether the file is complete (it will be deleted). Never raises: the error
        that made the attempt give up is the one to report, and closing a file on a full disk fails again."""
        closers = [self._writer.close] if self._writer is not None else []
        if self._opened is not None:
            closers += [handle.close for handle in reversed(self._opened.fobjects)]  # each, even if one fails
        for close in closers:
            with contextlib.suppress(Exception):
                close()

