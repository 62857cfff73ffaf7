"""A SQL query as input: cut into chunks by ranges of an indexed integer column, read as Arrow.

Planning runs two queries: the result's schema (no rows) and one
``MIN``/``MAX``/``COUNT`` over ``partition_column``. A piece (kind
``keyrange``) is the rows whose partition value lies in ``[start, stop)``;
ranges are equal in width, so their row counts are estimates, and splitting
a piece halves its range. Each row's ``_offset`` is its partition value, its
identity within the query. A worker reads its range with one query whose
result streams as record batches, so memory follows the batch, not the chunk.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.compute as pc

from squall.errors import InputError
from squall.formats.base import OFFSET_COLUMN, BadRecord, FileInfo, ReadOptions, SourceFile
from squall.plan.chunk import Piece
from squall.sql.drivers import connect, quote, redacted

_BYTES_PER_VALUE = 8  # a planning estimate: the result has no size until it is read


class SqlFormat:
    """The rows of ``query`` on the database that ``input`` names."""

    name = "sql"

    def describe(self, file: SourceFile, options: ReadOptions) -> FileInfo:
        query, column = _query_and_column(file.uri, options)
        with connect(file.uri) as connection, connection.cursor() as cursor:
            # One row, not none: SQLite's types belong to values, so a result without rows has no types.
            schema = _run(file.uri, cursor, f"SELECT * FROM ({query}) AS squall_q LIMIT 1").fetch_arrow_table().schema
            _check_column(file.uri, schema, column)
            bounds = f"SELECT MIN({quote(column)}), MAX({quote(column)}), COUNT(*) FROM ({query}) AS squall_q"
            low, high, rows = _run(file.uri, cursor, bounds).fetchone()
        return FileInfo(
            file=replace(file, size=int(rows) * len(schema) * _BYTES_PER_VALUE),
            schema=schema,
            rows=int(rows),
            key_range=(int(low), int(high) + 1) if rows else (0, 0),
        )

    def cut(self, info: FileInfo, target_rows: int) -> list[tuple[Piece, int]]:
        low, stop = info.key_range or (0, 0)
        if not info.rows:
            return []
        count = max(1, min(-(-info.rows // max(1, target_rows)), stop - low))
        bounds = [low + (stop - low) * i // count for i in range(count + 1)]
        # Cumulative estimates, so that the pieces' estimates add up to the query's count.
        before = [info.rows * (bound - low) // (stop - low) for bound in bounds]
        return [
            (Piece(info.file.uri, "keyrange", lo, hi), rows_to - rows_from)
            for lo, hi, rows_from, rows_to in zip(bounds, bounds[1:], before, before[1:])
        ]

    def read(
        self, piece: Piece, options: ReadOptions, batch_rows: int, bad: list[BadRecord]
    ) -> Iterator[pa.RecordBatch]:
        query, column = _query_and_column(piece.uri, options)
        wanted = list(dict.fromkeys([*options.columns, column])) if options.columns else ["*"]
        selected = ", ".join(quote(c) if c != "*" else c for c in wanted)
        with connect(piece.uri) as connection, connection.cursor() as cursor:
            cursor.execute(
                f"SELECT {selected} FROM ({query}) AS squall_q "
                f"WHERE {quote(column)} >= {int(piece.start)} AND {quote(column)} < {int(piece.stop)}"
            )
            for batch in _rebatched(cursor.fetch_record_batch(), batch_rows):
                offsets = pc.cast(batch.column(column), pa.int64())
                kept = [n for n in batch.schema.names if n in options.columns] if options.columns else batch.schema.names
                yield pa.RecordBatch.from_arrays(
                    [*(batch.column(n) for n in kept), offsets], names=[*kept, OFFSET_COLUMN]
                )


def _query_and_column(uri: str, options: ReadOptions) -> tuple[str, str]:
    if not options.query or not options.partition_column:
        raise InputError(
            f"{redacted(uri)}: a database input needs `query` (--query) and `partition_column` (--partition-column), "
            "an indexed integer column of the query's result"
        )
    return options.query.strip().rstrip(";"), options.partition_column


def _run(uri: str, cursor: Any, statement: str) -> Any:
    try:
        cursor.execute(statement)
    except Exception as exc:  # the driver's own error types; each names what the database refused
        raise InputError(f"{redacted(uri)}: the query failed ({exc}); check `query` and `partition_column`") from None
    return cursor


def _check_column(uri: str, schema: pa.Schema, column: str) -> None:
    if column not in schema.names:
        raise InputError(f"{redacted(uri)}: the query has no column {column!r}; its columns are {schema.names}")
    if not pa.types.is_integer(schema.field(column).type):
        raise InputError(
            f"{redacted(uri)}: partition_column {column!r} is {schema.field(column).type}, not an integer; "
            "choose an indexed integer column"
        )


def _rebatched(reader: Any, batch_rows: int) -> Iterator[pa.RecordBatch]:
    """The reader's batches, cut to at most ``batch_rows`` rows (drivers choose their own sizes)."""
    for batch in reader:
        for start in range(0, batch.num_rows, batch_rows):
            yield batch.slice(start, batch_rows)
