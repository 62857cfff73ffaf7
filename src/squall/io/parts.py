"""Part writers: one output file per chunk attempt, in the job's output format.

Adding an output format is one writer class and one line in ``_WRITERS``.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any, Protocol

import fsspec
import pyarrow as pa
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


def conform(batch: pa.RecordBatch, schema: pa.Schema, uri: str) -> pa.RecordBatch:
    """A later batch in the part's first schema (a model may return ints for one batch and floats for another)."""
    if batch.schema.names != schema.names:
        raise OutputShapeError(f"{uri}: a batch has columns {batch.schema.names}, the part has {schema.names}")
    try:
        return pa.Table.from_batches([batch]).cast(schema).combine_chunks().to_batches()[0]
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise OutputShapeError(f"{uri}: a batch's types do not fit the part's schema {schema}: {exc}") from None


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
        if batch.schema != self._schema:
            batch = conform(batch, self._schema, self.uri)
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

