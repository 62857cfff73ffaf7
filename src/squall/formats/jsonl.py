"""JSON Lines: one object per line, byte-range pieces aligned to line ends.

The schema is inferred at planning from the head of the first file; a line
that is not a JSON object, or whose values do not fit the schema, becomes a
bad record (file and byte offset), not a failed chunk.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.json as pajson

from squall.errors import InputError
from squall.formats.base import BadRecord, FileInfo, ReadOptions, SourceFile
from squall.formats.lines import (
    LineBlock,
    compression_of,
    content_size_guess,
    cut_ranges,
    drop_lines,
    head_block,
    blank_lines,
    invalid_utf8_lines,
    line_bounds,
    oversized_records,
    read_head,
    read_line_range,
    stream_line_blocks,
)
from squall.formats.table import attach_offsets, schema_from_types
from squall.plan.chunk import Piece

_HEAD_BYTES = 1 << 20
_SAMPLE_LINES = 2_000


class JsonlFormat:
    """Newline-delimited JSON objects."""

    name = "jsonl"

    def describe(self, file: SourceFile, options: ReadOptions) -> FileInfo:
        head = read_head(file.uri, _HEAD_BYTES, file.size)
        compressed = compression_of(file.uri) is not None
        whole = len(head) < _HEAD_BYTES if compressed else len(head) == file.size
        sample = head if whole else head[: head.rfind(b"\n") + 1]
        if not sample.strip():
            if file.size and not head.strip():
                return FileInfo(file=file, schema=pa.schema([]), rows=0)
            if file.size:
                raise InputError(f"{file.uri}: the first line is longer than {_HEAD_BYTES} bytes; is this JSON Lines?")
            return FileInfo(file=file, schema=pa.schema([]), rows=0)
        schema = _sample_schema(file, head_block(sample, 0))
        sample_rows = len(head_block(sample, 0).offsets)
        rows = max(1, round(content_size_guess(file.size, compressed) * sample_rows / len(sample)))
        return FileInfo(file=file, schema=schema, rows=rows, notes=("compressed",) * compressed)

    def cut(self, info: FileInfo, target_rows: int) -> list[tuple[Piece, int]]:
        if info.file.size == 0 or info.rows == 0:
            return []
        if "compressed" in info.notes:
            return [(Piece(info.file.uri, "stream", 0, info.file.size), info.rows)]
        bytes_per_row = info.file.size / info.rows
        ranges = cut_ranges(0, info.file.size, max(1, int(target_rows * bytes_per_row)))
        return [(Piece(info.file.uri, "bytes", lo, hi), max(1, round((hi - lo) / bytes_per_row))) for lo, hi in ranges]

    def read(
        self, piece: Piece, options: ReadOptions, batch_rows: int, bad: list[BadRecord]
    ) -> Iterator[pa.RecordBatch]:
        schema = schema_from_types(options.column_types)
        if piece.kind == "stream":
            blocks = stream_line_blocks(piece.uri, 0, options.max_line_bytes)
        else:
            blocks = iter([read_line_range(piece.uri, piece.start, piece.stop, 0, options.max_line_bytes)])
        for block in blocks:
            yield from attach_offsets(*_parse_block(block, schema, options, bad), options, batch_rows)


def _parse_block(
    block: LineBlock, schema: pa.Schema, options: ReadOptions, bad: list[BadRecord]
) -> tuple[pa.Table, np.ndarray]:
    bad.extend(oversized_records(block, options.max_line_bytes))
    block = _valid_utf8(block, bad)
    blank = blank_lines(block)
    if blank.any():
        block = drop_lines(block, blank)  # whitespace only: nothing to read, nothing lost
    if not block.data.strip():
        return schema.empty_table(), np.empty(0, dtype=np.int64)
    try:
        table = _parse(block.data, schema)
    except pa.ArrowInvalid:
        return _parse_line_by_line(block, schema, bad)
    if table.num_rows != len(block.offsets):  # blank-looking lines, or two objects on one line
        return _parse_line_by_line(block, schema, bad)
    return table, block.offsets


def _sample_schema(file: SourceFile, sample: LineBlock) -> pa.Schema:
    """The schema of the sampled lines; with bad lines among them, the schema most lines agree on."""
    try:
        return _parse(sample.data, schema=None).schema
    except pa.ArrowInvalid:
        pass
    votes: Counter[pa.Schema] = Counter()
    starts, ends = line_bounds(sample.data)
    for start, end in list(zip(starts.tolist(), ends.tolist()))[:_SAMPLE_LINES]:
        line = sample.data[start:end]
        if line.strip() and _not_an_object(line) is None:
            try:
                votes[_parse(line + b"\n", schema=None).schema] += 1
            except pa.ArrowInvalid:
                continue
    if not votes:
        raise InputError(f"{file.uri}: none of the first lines is a JSON object; is this JSON Lines?")
    return votes.most_common(1)[0][0]


def _not_an_object(line: bytes) -> str | None:
    """Why ``line`` is not a JSON object, or ``None`` if it is one."""
    try:
        value = json.loads(line)
    except (UnicodeDecodeError, ValueError) as exc:
        return f"not valid JSON: {exc}"
    return None if isinstance(value, dict) else f"expected a JSON object, found {type(value).__name__}"


def _valid_utf8(block: LineBlock, bad: list[BadRecord]) -> LineBlock:
    broken = invalid_utf8_lines(block)
    if not broken.any():
        return block
    bad.extend(BadRecord(int(o), "InvalidEncoding", "the line is not valid UTF-8") for o in block.offsets[broken])
    return drop_lines(block, broken)


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
        if not line.strip():
            continue
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
    problem = _not_an_object(line)
    if problem is not None:
        return "MalformedRecord", problem
    try:
        _parse(line + b"\n", schema)
    except pa.ArrowInvalid as exc:
        return "ConversionError", str(exc)
    return None
