"""Output formats: how a part file is written and how its rows are counted back from storage.

Each format is a :class:`PartWriter` class registered in ``OUTPUT_FORMATS``
with its file extension; adding one is a class and one registry line (or an
entry point in ``squall.output_formats``). The committer counts a committed
part's rows with the format's own :meth:`count_rows`, from what is on storage.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from squall.registry import Plugin, Registry


class PartWriter(Protocol):
    """Writes record batches that share one schema to one file; ``close`` makes the file complete."""

    def __init__(self, handle: Any, schema: pa.Schema) -> None: ...

    def write(self, batch: pa.RecordBatch) -> None: ...

    def close(self) -> None: ...

    @staticmethod
    def count_rows(handle: Any) -> int:
        """The rows of a complete file of this format, read from ``handle``."""


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

    @staticmethod
    def count_rows(handle: Any) -> int:
        """From the footer."""
        return int(pq.ParquetFile(handle).metadata.num_rows)


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

    @staticmethod
    def count_rows(handle: Any) -> int:
        """The records less the header line, quoted line breaks kept in their record; only the first field is
        converted (as text)."""
        reader = pacsv.open_csv(
            handle,
            read_options=pacsv.ReadOptions(skip_rows=1, autogenerate_column_names=True, block_size=1 << 24),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(include_columns=["f0"], column_types={"f0": pa.string()}),
        )
        return sum(batch.num_rows for batch in reader)


class JsonlPartWriter:
    """One JSON object per line; floats are written exactly (shortest round-trip form)."""

    def __init__(self, handle: Any, schema: pa.Schema) -> None:
        self._handle = handle

    def write(self, batch: pa.RecordBatch) -> None:
        lines = [json.dumps(row, default=str, allow_nan=True) for row in batch.to_pylist()]
        self._handle.write(("\n".join(lines) + "\n").encode())

    def close(self) -> None:
        return None

    @staticmethod
    def count_rows(handle: Any) -> int:
        """The lines."""
        return sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 20), b""))


OUTPUT_FORMATS: Registry[type[PartWriter]] = Registry("output format", "squall.output_formats", (
    Plugin("parquet", "squall.io.part_formats:ParquetPartWriter", extensions=(".parquet",)),
    Plugin("csv", "squall.io.part_formats:CsvPartWriter", extensions=(".csv",)),
    Plugin("jsonl", "squall.io.part_formats:JsonlPartWriter", extensions=(".jsonl",)),
))


def extension_of(output_format: str) -> str:
    """The file extension of ``output_format``'s parts, without the dot."""
    plugin = OUTPUT_FORMATS.plugin(output_format)
    return plugin.extensions[0].lstrip(".") if plugin.extensions else output_format


def count_rows(handle: Any, uri: str) -> int:
    """The rows in the part file ``uri`` (open as ``handle``), counted by the format its extension names."""
    name = OUTPUT_FORMATS.by_extension(uri)
    if name is None:
        raise ValueError(f"{uri}: not a part file of any output format ({', '.join(OUTPUT_FORMATS.extensions())})")
    return OUTPUT_FORMATS.load(name).count_rows(handle)
