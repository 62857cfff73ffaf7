"""Byte ranges of line-oriented files (CSV, JSONL), cut so that every line is read exactly once.

The rule (DESIGN.md, chunk descriptor): the range ``[start, stop)`` owns the
lines that *begin* inside it. A reader therefore skips the partial line it
lands in (unless ``start`` is the first data byte) and reads on past ``stop``
to the end of the last line it owns. Cutting needs no data at all; reading
needs one extra byte before ``start`` and the tail of one line after ``stop``.

A line longer than ``max_line_bytes`` is never held whole in memory: it is
left out of the block and reported as oversized, with its offset.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import BinaryIO

import fsspec
import numpy as np

from squall.formats.base import BadRecord

_READ_AHEAD = 1 << 16
NEWLINE = 0x0A


@dataclass(frozen=True)
class LineBlock:
    """Whole lines read from a file.

    ``data`` holds the lines that were kept, in order; ``offsets`` is the file
    offset of each non-empty one; ``oversized`` the offsets of lines left out
    for being longer than the cap.
    """

    data: bytes
    offsets: np.ndarray
    oversized: tuple[int, ...] = field(default=())


def cut_ranges(data_start: int, size: int, target_bytes: int) -> list[tuple[int, int]]:
    """Split ``[data_start, size)`` into consecutive ranges of at most ``target_bytes``."""
    target_bytes = max(1, target_bytes)
    return [(lo, min(lo + target_bytes, size)) for lo in range(data_start, size, target_bytes)]


def read_line_range(uri: str, start: int, stop: int, data_start: int, max_line_bytes: int) -> LineBlock:
    """Read the whole lines that begin in ``[start, stop)`` of ``uri``."""
    oversized: list[int] = []
    with fsspec.open(uri, "rb") as handle:
        first = data_start if start <= data_start else _first_line_start(handle, start)
        if first >= stop:
            return LineBlock(b"", np.empty(0, dtype=np.int64))
        handle.seek(first)
        body = handle.read(stop - first)
        if body and body[-1] != NEWLINE:
            tail = _rest_of_line(handle, max_line_bytes)
            if tail is None:
                last = body.rfind(b"\n") + 1
                oversized.append(first + last)
                body = body[:last]
            else:
                body += tail
    return _without_long_lines(body, first, max_line_bytes, oversized)


def _first_line_start(handle: BinaryIO, start: int) -> int:
    """The offset of the first line that begins at or after ``start`` (streams over a long line)."""
    handle.seek(start - 1)
    scanned = 0
    while True:
        block = handle.read(_READ_AHEAD)
        if not block:
            return start - 1 + scanned
        hit = block.find(b"\n")
        if hit >= 0:
            return start + scanned + hit
        scanned += len(block)


def _rest_of_line(handle: BinaryIO, max_line_bytes: int) -> bytes | None:
    """Bytes through the next newline (or end of file); ``None`` once more than the cap were seen."""
    parts: list[bytes] = []
    scanned = 0
    while True:
        block = handle.read(_READ_AHEAD)
        if not block:
            return b"".join(parts)
        hit = block.find(b"\n")
        if hit >= 0:
            parts.append(block[: hit + 1])
            return b"".join(parts)
        parts.append(block)
        scanned += len(block)
        if scanned > max_line_bytes:
            return None


def _without_long_lines(body: bytes, base: int, max_line_bytes: int, oversized: list[int]) -> LineBlock:
    starts, ends = line_bounds(body)
    long_lines = (ends - starts) > max_line_bytes
    keep = (ends > starts) & ~long_lines
    if long_lines.any():
        oversized = sorted([*oversized, *(int(s) + base for s in starts[long_lines])])
        buffer = np.frombuffer(body, dtype=np.uint8)
        line_ends = np.minimum(np.append(starts[1:], len(buffer)), len(buffer))
        body = b"".join(buffer[s:e].tobytes() for s, e, bad in zip(starts, line_ends, long_lines) if not bad)
    return LineBlock(body, (starts[keep] + base).astype(np.int64), tuple(oversized))


def line_bounds(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive, without the line break) of every line in ``data``."""
    buffer = np.frombuffer(data, dtype=np.uint8)
    breaks = np.flatnonzero(buffer == NEWLINE)
    starts = np.concatenate(([0], breaks + 1)).astype(np.int64)
    ends = np.concatenate((breaks, [len(buffer)])).astype(np.int64)
    if len(buffer) == 0 or buffer[-1] == NEWLINE:
        starts, ends = starts[:-1], ends[:-1]
    if len(starts):
        carriage = (ends > starts) & (buffer[np.maximum(ends - 1, 0)] == 0x0D)
        ends = ends - carriage.astype(np.int64)
    return starts, ends


def odd_quote_line(block: LineBlock, quotechar: str) -> int | None:
    """File offset of the first non-empty line with an odd number of quote characters, or ``None``.

    In well-formed CSV, quotes inside a field are doubled, so an odd count means
    a quoted field runs over a line break.
    """
    buffer = np.frombuffer(block.data, dtype=np.uint8)
    quotes = np.flatnonzero(buffer == ord(quotechar))
    if len(quotes) == 0:
        return None
    starts, ends = line_bounds(block.data)
    nonempty = ends > starts
    counts = (np.searchsorted(quotes, ends) - np.searchsorted(quotes, starts))[nonempty]
    odd = np.flatnonzero(counts % 2)
    return int(block.offsets[odd[0]]) if len(odd) else None


def head_block(data: bytes, base: int) -> LineBlock:
    """A block over bytes already in memory (a file's head, read at planning)."""
    starts, ends = line_bounds(data)
    return LineBlock(data, (starts[ends > starts] + base).astype(np.int64))


def oversized_records(block: LineBlock, max_line_bytes: int) -> list[BadRecord]:
    """The block's left-out long lines as bad records."""
    return [
        BadRecord(offset, "RecordTooLarge", f"the line is longer than max_line_bytes ({max_line_bytes}); it was skipped")
        for offset in block.oversized
    ]
