"""Replay: read again only the rows that failed (those in ``_errors/``) and queue them as new chunks.

Each error row names its file and ``_offset``; a replay piece reads just that
row (a one-line byte range of CSV/JSONL, the row's Parquet row group with an
offset filter, or the whole file with an offset filter for multi-line CSV and
compressed inputs). Rows are grouped by how often they were tried, so a row
that fails again is recorded with its try count plus one.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from itertools import accumulate

import fsspec
import pyarrow.parquet as pq

from squall.plan.chunk import Chunk, Piece
from squall.store import DoneChunk

REPLAY_CHUNK_ROWS = 5_000


@dataclass(frozen=True)
class FailedRow:
    """One row of an error part: where it is, and how many times it was tried."""

    uri: str
    offset: int
    tries: int


def failed_rows(done: list[DoneChunk]) -> tuple[list[FailedRow], list[int]]:
    """The rows of every live error part, and the chunks those parts belong to."""
    rows: list[FailedRow] = []
    owners: list[int] = []
    for chunk in done:
        if not chunk.error_part or chunk.errors_superseded:
            continue
        with fsspec.open(chunk.error_part, "rb") as handle:
            table = pq.read_table(handle, columns=["_source", "_offset", "tries"])
        rows += [FailedRow(*row.values()) for row in table.to_pylist()]
        owners.append(chunk.chunk_id)
    return rows, owners


def replay_chunks(
    job_id: str, fmt: str, rows: list[FailedRow], done: list[DoneChunk], first_id: int, chunk_rows: int | None = None
) -> list[Chunk]:
    """Chunks of at most ``chunk_rows`` rows that read exactly ``rows`` again, numbered from ``first_id``."""
    size = chunk_rows or REPLAY_CHUNK_ROWS
    originals = {piece.uri: piece for chunk in done for piece in chunk.chunk.pieces}
    chunks: list[Chunk] = []
    by_tries: dict[int, list[FailedRow]] = defaultdict(list)
    for row in rows:
        by_tries[row.tries].append(row)
    for tries, group in sorted(by_tries.items()):
        for start in range(0, len(group), size):
            batch = group[start : start + size]
            pieces = tuple(_pieces(batch, originals))
            chunks.append(Chunk(job_id, first_id + len(chunks), fmt, pieces, len(batch), 0, tries=tries + 1))
    return chunks


def _pieces(rows: list[FailedRow], originals: dict[str, Piece]) -> list[Piece]:
    by_file: dict[str, list[int]] = defaultdict(list)
    for row in rows:
        by_file[row.uri].append(row.offset)
    pieces: list[Piece] = []
    for uri, offsets in sorted(by_file.items()):
        original = originals[uri]
        if original.kind in ("bytes", "keyrange"):
            pieces += [Piece(uri, original.kind, o, o + 1, header_end=original.header_end) for o in sorted(offsets)]
        elif original.kind == "rowgroups":
            pieces += _row_group_pieces(uri, sorted(offsets))
        else:
            pieces.append(Piece(uri, original.kind, 0, original.stop, header_end=original.header_end, offsets=tuple(sorted(offsets))))
    return pieces


def _row_group_pieces(uri: str, rows: list[int]) -> list[Piece]:
    with fsspec.open(uri, "rb") as handle:
        metadata = pq.ParquetFile(handle).metadata
    starts = [0, *accumulate(metadata.row_group(i).num_rows for i in range(metadata.num_row_groups))]
    by_group: dict[int, list[int]] = defaultdict(list)
    for row in rows:
        group = next(i for i in range(metadata.num_row_groups) if starts[i] <= row < starts[i + 1])
        by_group[group].append(row)
    return [Piece(uri, "rowgroups", g, g + 1, offsets=tuple(found)) for g, found in sorted(by_group.items())]
