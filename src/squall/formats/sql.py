"""A SQL query as input: cut into chunks by ranges of an indexed integer column, read as Arrow.

Planning runs two queries: the result's schema (no rows) and one
``MIN``/``MAX``/``COUNT`` over ``partition_column``. A piece (kind
``keyrange``) is the rows whose partition value lies in ``[start, stop)``;
ranges are equal in width, so their row counts are estimates, and splitting
a piece halves its range. Each row's ``_offset`` is its partition value, its
identity within the query. A worker reads its range with one query whose
result streams as record batches, so memory follows the batch, not the chunk.

The query must be one statement that stays inside the subquery it is wrapped
in (:mod:`squall.sql.statement`), its partition values must not be NULL (no
range would hold those rows), and a chunk whose rows fall outside its range
fails: the key ranges are what make every row read exactly once.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.compute as pc

from squall.errors import InputError
from squall.formats.base import OFFSET_COLUMN, BadRecord, FileInfo, ReadOptions, SourceFile
from squall.plan.chunk import Piece
from squall.sql.drivers import connect, quote, redacted, scheme
from squall.sql.statement import one_statement

_BYTES_PER_VALUE = 8  # a planning estimate: the result has no size until it is read


class SqlFormat:
    """The rows of ``query`` on the database that ``input`` names."""

    name = "sql"

    def describe(self, file: SourceFile, options: ReadOptions) -> FileInfo:
        query, column = _query_and_column(file.uri, options)
        with connect(file.uri) as connection, connection.cursor() as cursor:
            # One row, not none: SQLite's types belong to values, so a result without rows has no types.
            schema = _run(file.uri, cursor, f"SELECT * FROM {_wrapped(query)} LIMIT 1").fetch_arrow_table().schema
            _check_column(file.uri, schema, column)
            key = quote(column)
            bounds = f"SELECT MIN({key}), MAX({key}), COUNT(*), COUNT({key}) FROM {_wrapped(query)}"
            low, high, rows, keyed = _run(file.uri, cursor, bounds).fetchone()
        _check_no_nulls(file.uri, column, int(rows) - int(keyed))
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
            cursor.execute(chunk_query(query, column, selected, piece))
            for batch in _rebatched(cursor.fetch_record_batch(), batch_rows):
                offsets = pc.cast(batch.column(column), pa.int64())
                _check_in_range(piece, column, offsets)
                kept = [n for n in batch.schema.names if n in options.columns] if options.columns else batch.schema.names
                yield pa.RecordBatch.from_arrays(
                    [*(batch.column(n) for n in kept), offsets], names=[*kept, OFFSET_COLUMN]
                )


def chunk_query(query: str, column: str, selected: str, piece: Piece) -> str:
    """The statement that reads ``piece``: the query's rows whose ``column`` lies in the piece's range."""
    key = quote(column)
    return f"SELECT {selected} FROM {_wrapped(query)} WHERE {key} >= {int(piece.start)} AND {key} < {int(piece.stop)}"


def _wrapped(query: str) -> str:
    """The query as a subquery, on lines of its own so that a trailing ``--`` comment ends with its line."""
    return f"(\n{query}\n) AS squall_q"


def _query_and_column(uri: str, options: ReadOptions) -> tuple[str, str]:
    if not options.query or not options.partition_column:
        raise InputError(
            f"{redacted(uri)}: a database input needs `query` (--query) and `partition_column` (--partition-column), "
            "an indexed integer column of the query's result"
        )
    return one_statement(options.query, scheme(uri)), options.partition_column


def _check_no_nulls(uri: str, column: str, nulls: int) -> None:
    if nulls:
        raise InputError(
            f"{redacted(uri)}: {nulls} row(s) of the query have NULL in partition_column {column!r}, and no key range "
            f"would read them; filter them out in `query` (WHERE {column} IS NOT NULL) or choose another column"
        )


def _check_in_range(piece: Piece, column: str, offsets: pa.Array) -> None:
    """A chunk reads only rows of its key range; anything else means the query escaped its range."""
    bounds = pc.min_max(offsets)
    low, high = bounds["min"], bounds["max"]
    if offsets.null_count or (len(offsets) and (low.as_py() < piece.start or high.as_py() >= piece.stop)):
        raise InputError(
            f"{redacted(piece.uri)}: the chunk for partition_column {column!r} in [{piece.start}, {piece.stop}) read "
            f"rows with {column} from {low.as_py()} to {high.as_py()}"
            f"{f' and {offsets.null_count} NULL(s)' if offsets.null_count else ''}; the query must not escape the "
            "subquery squall wraps it in (one SELECT statement, parentheses balanced)"
        )


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
