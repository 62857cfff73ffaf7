"""JSON Lines: one object per line, byte-range pieces aligned to line ends.

The schema is inferred at planning from the head of the first file; a line
that is not a JSON object, or whose values do not fit the schema, becomes a
bad record (file and byte offset), not a failed chunk.
"""

from __future__ import annotations

import io
import json
from typing import Iterator

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.json as pajson

from squall.errors import InputError
from squall.formats.base import BadRecord, FileInfo, ReadOptions, SourceFile
from squall.formats.lines import LineBlock, cut_ranges, head_block, line_bounds, oversized_records, read_line_range
from squall.formats.table import attach_offsets, schema_from_types
from squall.plan.chunk import Piece

_HEAD_BYTES = 1 << 20


class JsonlFormat:
    """Newline-delimited JSON objects."""

    name = "jsonl"

    def describe(self, file: SourceFile, options: ReadOptions) -> FileInfo:
        with fsspec.open(file.uri, "rb") as handle:
            head = handle.read(_HEAD_BYTES)
        sample = head if len(head) == file.size else head[: head.rfind(b"\n") + 1]
        if not sample.strip():
            if file.size and not head.strip():
                return FileInfo(file=file, schema=pa.schema([]), rows=0)
            if file.size:
                raise InputError(f"{file.uri}: the first line is longer than {_HEAD_BYTES} bytes; is this JSON Lines?")
            return FileInfo(file=file, schema=pa.schema([]), rows=0)
        try:
            table = _parse(sample, schema=None)
        except pa.ArrowInvalid as exc:
            raise InputError(f"{file.uri}: the first lines are not JSON objects ({exc}); is this JSON Lines?") from None
        sample_rows = len(head_block(sample, 0).offsets)
        rows = max(1, round(file.size * sample_rows / len(sample)))
        return FileInfo(file=file, schema=table.schema, rows=rows)

    def cut(self, info: FileInfo, target_rows: int) -> list[tuple[Piece, int]]:
        if info.file.size == 0 or info.rows == 0:
            return []
        bytes_per_row = info.file.size / info.rows
        ranges = cut_ranges(0, info.file.size, max(1, int(target_rows * bytes_per_row)))
        return [(Piece(info.file.uri, "bytes", lo, hi), max(1, round((hi - lo) / bytes_per_row))) for lo, hi in ranges]

    def read(
        self, piece: Piece, options: ReadOptions, batch_rows: int, bad: list[BadRecord]
    ) -> Iterator[pa.RecordBatch]:
        block = read_line_range(piece.uri, piece.start, piece.stop, 0, options.max_line_bytes)
        schema = schema_from_types(options.column_types)
        offsets = block.offsets
        bad.extend(oversized_records(block, options.max_line_bytes))
        if not block.data.strip():
            table = schema.empty_table()
        else:
            try:
                table = _parse(block.data, schema)
            except pa.ArrowInvalid:
                table, offsets = _parse_line_by_line(block, schema, bad)
        yield from attach_offsets(table, offsets, options, batch_rows)


def _parse(data: bytes, schema: pa.Schema | None) -> pa.Table:
    parse = pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore") if schema else None
    return pajson.read_json(
        io.BytesIO(data),
        read_options=pajson.ReadOptions(use_threads=False, block_size=max(len(data) + 1, 1 << 20)),
        parse_options=parse,
    )


def _parse_line_by_line(block: LineBlock, schema: pa.Schema, bad: list[BadRecord]) -> tuple[pa.Table, np.ndarray]:
    """The slow path, taken only when a block has a bad line: find each bad line, parse the rest at once."""
    starts, ends = line_bounds(block.data)
    nonempty = ends > starts
    good_lines: list[bytes] = []
    good_offsets: list[int] = []
    for start, end, offset in zip(starts[nonempty].tolist(), ends[nonempty].tolist(), block.offsets.tolist()):
        line = block.data[start:end]
        problem = _line_problem(line, schema)
        if problem is None:
            good_lines.append(line)
            good_offsets.append(offset)
        else:
            bad.append(BadRecord(offset, problem[0], problem[1]))
    if not good_lines:
        return schema.empty_table(), np.empty(0, dtype=np.int64)
    return _parse(b"\n".join(good_lines) + b"\n", schema), np.array(good_offsets, dtype=np.int64)


def _line_problem(line: bytes, schema: pa.Schema) -> tuple[str, str] | None:
    try:
        value = json.loads(line)
    except (UnicodeDecodeError, ValueError) as exc:
        return "MalformedRecord", f"not valid JSON: {exc}"
    if not isinstance(value, dict):
        return "MalformedRecord", f"expected a JSON object, found {type(value).__name__}"
    try:
        _parse(line + b"\n", schema)
    except pa.ArrowInvalid as exc:
        return "ConversionError", str(exc)
    return None
