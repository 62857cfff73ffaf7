"""The ``fwf`` input format: fixed-width text, squall's :class:`~squall.formats.base.InputFormat`.

The first line names the columns; each column's field starts where its name
starts and runs to the next name. Every line has the same length, so a file
is cut by whole lines and its rows are counted from its size. A column whose
values in the head are all integers is read as int64, else float64. A line
whose field does not parse is a bad record; the rest of the piece is read.
"""

from __future__ import annotations

import re
from typing import Iterator

import fsspec
import pyarrow as pa

from squall.errors import InputError
from squall.formats.base import OFFSET_COLUMN, BadRecord, FileInfo, ReadOptions, SourceFile
from squall.plan.chunk import Piece

_HEAD_BYTES = 1 << 16


def _fields(header: str) -> list[tuple[str, int, int]]:
    """(name, start, stop) of each column; the last runs to the end of the line."""
    starts = [(m.group(), m.start()) for m in re.finditer(r"\S+", header)]
    return [(name, start, starts[i + 1][1] if i + 1 < len(starts) else len(header)) for i, (name, start) in enumerate(starts)]


def _head(uri: str) -> tuple[bytes, int]:
    with fsspec.open(uri, "rb") as handle:
        head = handle.read(_HEAD_BYTES)
    end = head.find(b"\n")
    if end < 0:
        raise InputError(f"{uri}: no header line; a fixed-width file starts with a line naming its columns")
    return head, end + 1


class FixedWidthFormat:
    """Fixed-width text files (see the module docstring)."""

    name = "fwf"

    def describe(self, file: SourceFile, options: ReadOptions) -> FileInfo:
        head, data_start = _head(file.uri)
        header = head[: data_start - 1].decode()
        lines = head[data_start:].split(b"\n")[:-1]
        width = len(header) + 1
        fields = _fields(header)
        types = [pa.int64() if all(line[a:b].strip().lstrip(b"-").isdigit() for line in lines) else pa.float64()
                 for _, a, b in fields]
        schema = pa.schema([(name, kind) for (name, _, _), kind in zip(fields, types)])
        return FileInfo(file=file, schema=schema, rows=(file.size - data_start) // width, data_start=data_start)

    def cut(self, info: FileInfo, target_rows: int) -> list[tuple[Piece, int]]:
        if info.rows == 0:
            return []
        width = (info.file.size - info.data_start) // info.rows
        step = max(1, target_rows) * width
        bounds = list(range(info.data_start, info.file.size, step)) + [info.file.size]
        return [
            (Piece(info.file.uri, "bytes", lo, hi, header_end=info.data_start), (hi - lo) // width)
            for lo, hi in zip(bounds, bounds[1:])
        ]

    def read(self, piece: Piece, options: ReadOptions, batch_rows: int, bad: list[BadRecord]) -> Iterator[pa.RecordBatch]:
        with fsspec.open(piece.uri, "rb") as handle:
            header = handle.read(piece.header_end).decode().rstrip("\n")
            handle.seek(piece.start)
            data = handle.read(piece.stop - piece.start)
        fields = _fields(header)
        types = dict(options.column_types)
        wanted = [f for f in fields if not options.columns or f[0] in options.columns]
        rows: list[list[object]] = []
        offsets: list[int] = []
        position = piece.start
        for line in data.split(b"\n")[:-1]:
            try:
                rows.append([_parse(line[a:b], types.get(name, "float64")) for name, a, b in wanted])
                offsets.append(position)
            except ValueError as exc:
                bad.append(BadRecord(position, "ValueError", str(exc)))
            position += len(line) + 1
            if len(rows) == batch_rows:
                yield _batch(wanted, types, rows, offsets)
                rows, offsets = [], []
        if rows:
            yield _batch(wanted, types, rows, offsets)


def _parse(text: bytes, kind: str) -> object:
    value = text.strip().decode()
    return int(value) if kind == "int64" else float(value)


def _batch(fields: list[tuple[str, int, int]], types: dict[str, str], rows: list[list[object]], offsets: list[int]) -> pa.RecordBatch:
    columns = [pa.array([row[i] for row in rows], pa.int64() if types.get(name) == "int64" else pa.float64())
               for i, (name, _, _) in enumerate(fields)]
    return pa.RecordBatch.from_arrays([*columns, pa.array(offsets, pa.int64())], names=[*(f[0] for f in fields), OFFSET_COLUMN])
