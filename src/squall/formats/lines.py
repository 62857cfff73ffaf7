"""Byte ranges of line-oriented files (CSV, JSONL), cut so that every line is read exactly once.

The rule (DESIGN.md, chunk descriptor): the range ``[start, stop)`` owns the
lines that *begin* inside it. A reader therefore skips the partial line it
lands in (unless ``start`` is the first data byte) and reads on past ``stop``
to the end of the last line it owns. Cutting needs no data at all; reading
needs one extra byte before ``start`` and the tail of one line after ``stop``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO

import fsspec
import numpy as np

from squall.errors import InputError

_READ_AHEAD = 1 << 16
NEWLINE = 0x0A


@dataclass(frozen=True)
class LineBlock:
    """Whole lines read from a file: ``data`` begins at byte ``base`` of the file."""

    data: bytes
    base: int


def cut_ranges(data_start: int, size: int, target_bytes: int) -> list[tuple[int, int]]:
    """Split ``[data_start, size)`` into consecutive ranges of at most ``target_bytes``."""
    target_bytes = max(1, target_bytes)
    return [(lo, min(lo + target_bytes, size)) for lo in range(data_start, size, target_bytes)]


def read_line_range(uri: str, start: int, stop: int, data_start: int, max_line_bytes: int) -> LineBlock:
    """Read the whole lines that begin in ``[start, stop)`` of ``uri``."""
    with fsspec.open(uri, "rb") as handle:
        first = data_start if start <= data_start else _first_line_start(handle, uri, start, max_line_bytes)
        if first >= stop:
            return LineBlock(b"", first)
        handle.seek(first)
        body = handle.read(stop - first)
        tail = _rest_of_line(handle, uri, stop, max_line_bytes) if body and body[-1] != NEWLINE else b""
    return LineBlock(body + tail, first)


def _first_line_start(handle: BinaryIO, uri: str, start: int, max_line_bytes: int) -> int:
    """The offset of the first line that begins at or after ``start``."""
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
        _check_line_size(scanned, uri, start, max_line_bytes)


def _rest_of_line(handle: BinaryIO, uri: str, offset: int, max_line_bytes: int) -> bytes:
    """Bytes from the current position through the next newline (or end of file)."""
    parts: list[bytes] = []
    scanned = 0
    while True:
        block = handle.read(_READ_AHEAD)
        if not block:
            break
        hit = block.find(b"\n")
        if hit >= 0:
            parts.append(block[: hit + 1])
            break
        parts.append(block)
        scanned += len(block)
        _check_line_size(scanned, uri, offset, max_line_bytes)
    return b"".join(parts)


def _check_line_size(scanned: int, uri: str, offset: int, max_line_bytes: int) -> None:
    if scanned > max_line_bytes:
        raise InputError(
            f"{uri}: a line near byte {offset} is longer than {max_line_bytes} bytes; "
            "raise `max_line_bytes` or fix the file"
        )


def line_bounds(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive, without the line break) of every line in ``data``."""
    buffer = np.frombuffer(data, dtype=np.uint8)
    breaks = np.flatnonzero(buffer == NEWLINE)
    starts = np.concatenate(([0], breaks + 1))
    ends = np.concatenate((breaks, [len(buffer)]))
    if len(buffer) == 0 or buffer[-1] == NEWLINE:
        starts, ends = starts[:-1], ends[:-1]
    if len(starts):
        carriage = (ends > starts) & (buffer[np.maximum(ends - 1, 0)] == 0x0D)
        ends = ends - carriage.astype(ends.dtype)
    return starts, ends


def nonempty_line_offsets(block: LineBlock) -> np.ndarray:
    """File offsets of the lines in ``block`` that hold anything (parsers skip empty lines)."""
    starts, ends = line_bounds(block.data)
    return (starts[ends > starts] + block.base).astype(np.int64)


def odd_quote_line(block: LineBlock, quotechar: str) -> int | None:
    """File offset of the first line with an odd number of quote characters, or ``None``.

    In well-formed CSV, quotes inside a field are doubled, so an odd count means
    a quoted field runs over a line break.
    """
    buffer = np.frombuffer(block.data, dtype=np.uint8)
    quotes = np.flatnonzero(buffer == ord(quotechar))
    if len(quotes) == 0:
        return None
    starts, ends = line_bounds(block.data)
    counts = np.searchsorted(quotes, ends) - np.searchsorted(quotes, starts)
    odd = np.flatnonzero(counts % 2)
    return int(starts[odd[0]] + block.base) if len(odd) else None
