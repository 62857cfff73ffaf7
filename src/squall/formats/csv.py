"""CSV: byte-range pieces aligned to line ends; whole-file pieces when quoted fields hold newlines.

Column types are inferred once, at planning, from the head of the first file,
and every piece is parsed with those types, so all parts agree on a schema.
A value that does not convert becomes a bad record (file and byte offset),
not a failed chunk.
"""

from __future__ import annotations

import io
from typing import Iterator

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from squall.errors import InputError
from squall.formats.base import BadRecord, FileInfo, ReadOptions, SourceFile
from squall.formats.lines import (
    LineBlock,
    compression_of,
    content_size_guess,
    cut_ranges,
    drop_lines,
    head_block,
    invalid_utf8_lines,
    line_bounds,
    odd_quote_lines,
    oversized_records,
    read_head,
    read_line_range,
    stream_line_blocks,
)
from squall.formats.table import attach_offsets, convert_leniently, majority_schema, schema_from_types
from squall.plan.chunk import Piece

_HEAD_BYTES = 1 << 20
_BOM = b"\xef\xbb\xbf"


class CsvFormat:
    """Comma- (or otherwise) separated text with an optional header line."""

    name = "csv"

    def describe(self, file: SourceFile, options: ReadOptions) -> FileInfo:
        if file.size == 0:
            return FileInfo(file=file, schema=pa.schema([]), rows=0)
        head = read_head(file.uri, _HEAD_BYTES, file.size)
        if len(head) < _HEAD_BYTES and not head.removeprefix(_BOM).strip():
            return FileInfo(file=file, schema=pa.schema([]), rows=0)  # blank lines only: an empty file
        compressed = compression_of(file.uri) is not None
        data_start = _header_end(head, file) if options.header else 0
        sample = _whole_lines(head[data_start:], at_eof=len(head) < _HEAD_BYTES if compressed else len(head) == file.size)
        names = _column_names(head, data_start, file, options)
        if not options.multiline:
            _refuse_multiline_records(file, head_block(sample, data_start), names, options)
            sample = _clean(head_block(sample, data_start), options, []).data
        if sample.strip():
            schema = majority_schema(_parse(sample, names, options, column_types=None, bad_rows=[]))
            sample_rows = len(head_block(sample, 0).offsets)
        else:
            schema, sample_rows = pa.schema([(name, pa.string()) for name in names]), 0
        rows = _estimate_rows(content_size_guess(file.size, compressed) - data_start, len(sample), sample_rows)
        notes = ("multiline",) * options.multiline + ("compressed",) * compressed
        return FileInfo(file=file, schema=schema, rows=rows, data_start=data_start, notes=notes)

    def cut(self, info: FileInfo, target_rows: int) -> list[tuple[Piece, int]]:
        data_bytes = info.file.size - info.data_start
        if data_bytes <= 0 or info.rows == 0:
            return []
        if "multiline" in info.notes:
            return [(Piece(info.file.uri, "file", 0, info.file.size, header_end=info.data_start), info.rows)]
        if "compressed" in info.notes:
            return [(Piece(info.file.uri, "stream", 0, info.file.size, header_end=info.data_start), info.rows)]
        bytes_per_row = data_bytes / max(info.rows, 1)
        target_bytes = max(1, int(target_rows * bytes_per_row))
        ranges = cut_ranges(info.data_start, info.file.size, target_bytes)
        return [
            (Piece(info.file.uri, "bytes", lo, hi, header_end=info.data_start), max(1, round((hi - lo) / bytes_per_row)))
            for lo, hi in ranges
        ]

    def read(
        self, piece: Piece, options: ReadOptions, batch_rows: int, bad: list[BadRecord]
    ) -> Iterator[pa.RecordBatch]:
        names = _file_columns(piece, options)
        if piece.kind == "file":
            yield from attach_offsets(*_read_whole_file(piece, options, names, bad), options, batch_rows)
            return
        if piece.kind == "stream":
            blocks = stream_line_blocks(piece.uri, piece.header_end, options.max_line_bytes)
        else:
            blocks = iter([read_line_range(piece.uri, piece.start, piece.stop, piece.header_end, options.max_line_bytes)])
        for block in blocks:
            yield from attach_offsets(*_parse_block(block, options, names, bad), options, batch_rows)


def _header_end(head: bytes, file: SourceFile) -> int:
    newline = head.find(b"\n")
    if newline < 0:
        if len(head) < file.size:
            raise InputError(f"{file.uri}: the header line is longer than {_HEAD_BYTES} bytes; is this a CSV file?")
        return len(head)
    return newline + 1


def _whole_lines(data: bytes, at_eof: bool) -> bytes:
    if at_eof:
        return data
    cut = data.rfind(b"\n")
    return data[: cut + 1] if cut >= 0 else b""


def _column_names(head: bytes, data_start: int, file: SourceFile, options: ReadOptions) -> list[str]:
    """The header's names (or ``column0``… for a file without one); a first line that is not CSV text is an
    :class:`InputError` naming the file."""
    first = head[:data_start] if options.header else head.split(b"\n", 1)[0]
    if not first.endswith(b"\n"):
        first += b"\n"  # Arrow cannot tell the columns of a last line that has no line break
    try:
        names = pacsv.read_csv(
            io.BytesIO(first),
            read_options=pacsv.ReadOptions(use_threads=False, autogenerate_column_names=not options.header),
            parse_options=_parse_options(options),
        ).column_names
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        reason = "is not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else f"is not CSV ({exc})"
        reason = "is empty" if not first.removeprefix(_BOM).strip() else reason
        raise InputError(
            f"{file.uri}: the first line {reason}; is this a CSV file? Leave it out of the input "
            "(name the data files, e.g. with a glob such as `DIR/*.csv`) or set `format` to what it holds"
        ) from None
    return names if options.header else [f"column{i}" for i in range(len(names))]


def _estimate_rows(data_bytes: int, sample_bytes: int, sample_rows: int) -> int:
    if data_bytes <= 0 or sample_rows == 0:
        return 0
    return max(1, round(data_bytes * sample_rows / max(sample_bytes, 1)))


def _parse_options(options: ReadOptions, bad_rows: list[tuple[int, str]] | None = None) -> pacsv.ParseOptions:
    def remember(row: pacsv.InvalidRow) -> str:
        assert bad_rows is not None
        bad_rows.append((row.number, f"expected {row.expected_columns} fields, found {row.actual_columns}"))
        return "skip"

    return pacsv.ParseOptions(
        delimiter=options.delimiter,
        quote_char=options.quotechar,
        newlines_in_values=options.multiline,
        invalid_row_handler=remember if bad_rows is not None else None,
    )


def _parse(
    data: bytes,
    names: list[str],
    options: ReadOptions,
    column_types: dict[str, pa.DataType] | None,
    bad_rows: list[tuple[int, str]] | None,
) -> pa.Table:
    return pacsv.read_csv(
        io.BytesIO(data),
        read_options=pacsv.ReadOptions(
            column_names=names, use_threads=False, block_size=max(len(data) + 1, 1 << 20)
        ),
        parse_options=_parse_options(options, bad_rows),
        convert_options=pacsv.ConvertOptions(
            column_types=column_types or {}, strings_can_be_null=True, quoted_strings_can_be_null=False
        ),
    )


def _file_columns(piece: Piece, options: ReadOptions) -> list[str]:
    """The column names of the piece's own file: files may order their columns differently."""
    if not options.header or piece.header_end == 0:
        return [name for name, _ in options.column_types]
    key = (piece.uri, piece.header_end)
    if key not in _HEADERS:
        head = read_head(piece.uri, piece.header_end, piece.stop)
        _HEADERS[key] = _column_names(head, piece.header_end, SourceFile(piece.uri, piece.stop), options)
    return _HEADERS[key]


_HEADERS: dict[tuple[str, int], list[str]] = {}


def _parse_block(
    block: LineBlock, options: ReadOptions, names: list[str], bad: list[BadRecord]
) -> tuple[pa.Table, np.ndarray]:
    bad.extend(oversized_records(block, options.max_line_bytes))
    block = _clean(block, options, bad)
    marks = len(bad)
    table, offsets = _parse_typed(block.data, names, options, block.offsets, bad)
    if table.num_rows == len(offsets):
        return table, offsets
    del bad[marks:]
    return _parse_line_by_line(block, names, options, bad)


def _parse_line_by_line(
    block: LineBlock, names: list[str], options: ReadOptions, bad: list[BadRecord]
) -> tuple[pa.Table, np.ndarray]:
    """The slow path, when a block's lines and records disagree (a bare carriage return splits a line in two)."""
    starts, ends = line_bounds(block.data)
    nonempty = ends > starts
    tables, kept = [], []
    for start, end, offset in zip(starts[nonempty].tolist(), ends[nonempty].tolist(), block.offsets.tolist()):
        found: list[BadRecord] = []
        table, _ = _parse_typed(block.data[start:end] + b"\n", names, options, np.array([offset]), found)
        if found:
            bad.extend(found)
        elif table.num_rows != 1:
            bad.append(BadRecord(offset, "MalformedRecord", f"the line holds {table.num_rows} records (a bare carriage return?)"))
        else:
            tables.append(table)
            kept.append(offset)
    if not tables:
        return schema_from_types(options.column_types).empty_table(), np.empty(0, dtype=np.int64)
    return pa.concat_tables(tables), np.array(kept, dtype=np.int64)


def _clean(block: LineBlock, options: ReadOptions, bad: list[BadRecord]) -> LineBlock:
    """Drop lines that are not UTF-8 or have an unbalanced quote (without `multiline`), as bad records."""
    broken = invalid_utf8_lines(block)
    reasons = {int(o): ("InvalidEncoding", "the line is not valid UTF-8") for o in block.offsets[broken]}
    if not options.multiline:
        odd = odd_quote_lines(block, options.quotechar) & ~broken
        message = "unbalanced quote character; if quoted fields hold line breaks, set multiline = true"
        reasons.update({int(o): ("MalformedRecord", message) for o in block.offsets[odd]})
        broken |= odd
    if not broken.any():
        return block
    bad.extend(BadRecord(offset, kind, message) for offset, (kind, message) in sorted(reasons.items()))
    return drop_lines(block, broken)


def _refuse_multiline_records(file: SourceFile, head: LineBlock, names: list[str], options: ReadOptions) -> None:
    """Refuse a CSV whose head holds quoted fields across lines: read per byte range, its records would be torn."""
    odd = odd_quote_lines(head, options.quotechar)
    if not odd.any():
        return
    try:
        records = pacsv.read_csv(
            io.BytesIO(head.data),
            read_options=pacsv.ReadOptions(column_names=names, use_threads=False),
            parse_options=pacsv.ParseOptions(
                delimiter=options.delimiter, quote_char=options.quotechar, newlines_in_values=True
            ),
        ).num_rows
    except pa.ArrowInvalid:
        return  # unterminated quotes, not multi-line records: those lines become error rows
    if records < len(head.offsets):
        raise InputError(
            f"{file.uri}: the record at byte {int(head.offsets[odd][0])} has a quoted field that spans lines; "
            "set `multiline = true` (--multiline) so such files are read whole"
        )


def _read_whole_file(
    piece: Piece, options: ReadOptions, names: list[str], bad: list[BadRecord]
) -> tuple[pa.Table, np.ndarray]:
    with fsspec.open(piece.uri, "rb", compression="infer") as handle:
        data = handle.read()
    return _parse_typed(data[piece.header_end :], names, options, None, bad)


def _parse_typed(
    data: bytes,
    names: list[str],
    options: ReadOptions,
    offsets: np.ndarray | None,
    bad: list[BadRecord],
) -> tuple[pa.Table, np.ndarray]:
    """Parse with the planned types; rows with the wrong field count or unconvertible values become bad records."""
    if not data:
        return schema_from_types(options.column_types).empty_table(), np.empty(0, dtype=np.int64)
    planned = schema_from_types(options.column_types)
    invalid: list[tuple[int, str]] = []
    try:
        table = _parse(data, names, options, dict(zip(planned.names, planned.types)), invalid)
        converted = True
    except pa.ArrowInvalid:
        invalid.clear()
        table = _parse(data, names, options, {n: pa.string() for n in names}, invalid)
        converted = False
    row_offsets = _surviving_offsets(table.num_rows, invalid, offsets, bad)
    if converted:
        return table, row_offsets
    return convert_leniently(table, options.column_types, row_offsets, bad)


def _surviving_offsets(
    rows: int, invalid: list[tuple[int, str]], offsets: np.ndarray | None, bad: list[BadRecord]
) -> np.ndarray:
    """Offsets of the rows the parser kept; the skipped ones are recorded as bad records."""
    if offsets is None:
        offsets = np.arange(rows + len(invalid), dtype=np.int64)
    keep = np.ones(len(offsets), dtype=bool)
    for number, message in invalid:
        index = number - 1
        keep[index] = False
        bad.append(BadRecord(int(offsets[index]), "MalformedRecord", message))
    return offsets[keep]
