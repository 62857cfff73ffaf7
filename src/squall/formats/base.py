"""The contract every input format implements, and the records it exchanges.

A format knows three things about its files: how to describe one cheaply
(schema, size, rows, from footers or the first bytes only), how to cut one
into pieces no larger than a target, and how to read one piece as Arrow
record batches that carry an ``_offset`` column (the row's identity within
its file). It knows nothing about jobs, stores or workers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Protocol

import pyarrow as pa

from squall.formats.options import ReadOptions
from squall.plan.chunk import Piece

OFFSET_COLUMN = "_offset"
SOURCE_COLUMN = "_source"
__all__ = ["OFFSET_COLUMN", "SOURCE_COLUMN", "SourceFile", "ReadOptions", "FileInfo", "BadRecord", "InputFormat"]


@dataclass(frozen=True)
class SourceFile:
    """One listed input file: its URI (with protocol), its size in bytes, and its version
    (modification time or ETag: what changes when the content does)."""

    uri: str
    size: int
    version: str = ""


@dataclass(frozen=True)
class FileInfo:
    """What planning learned about one file without reading its data."""

    file: SourceFile
    schema: pa.Schema
    rows: int
    data_start: int = 0
    row_group_rows: tuple[int, ...] = ()
    row_group_bytes: tuple[int, ...] = ()
    key_range: tuple[int, int] | None = None
    notes: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class BadRecord:
    """A record the reader could not turn into a row: where it is and why."""

    offset: int
    error_type: str
    message: str


class InputFormat(Protocol):
    """One input format. Implementations are registered in :mod:`squall.formats.registry`."""

    name: str

    def describe(self, file: SourceFile, options: ReadOptions) -> FileInfo:
        """Schema and row estimate of ``file``, reading only metadata or a small head sample.

        Raises :class:`squall.errors.InputError` naming the file when it cannot be parsed.
        """

    def cut(self, info: FileInfo, target_rows: int) -> list[tuple[Piece, int]]:
        """Split the file into pieces of about ``target_rows`` rows each, with each piece's row estimate.

        The pieces cover every row of the file exactly once, in order.
        """

    def read(
        self, piece: Piece, options: ReadOptions, batch_rows: int, bad: list[BadRecord]
    ) -> Iterator[pa.RecordBatch]:
        """Yield the piece's rows as record batches of at most ``batch_rows`` rows with an ``_offset`` column.

        Records that cannot be parsed are appended to ``bad`` instead of failing the piece.
        """
