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
from typing import BinaryIO, Iterator

import fsspec
import numpy as np

from squall.formats.base import BadRecord
from squall.io.storage import open_ranged, read_range

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
    """Read the whole lines that begin in ``[start, stop)`` of ``uri``.

    One read (one ranged GET on an object store) fetches the byte before the
    range, the range, and :data:`_READ_AHEAD` bytes past it, where the line
    that crosses ``stop`` almost always ends; only a longer line costs more reads.
    """
    low = data_start if start <= data_start else start - 1
    window = read_range(uri, low, stop + _READ_AHEAD)
    first = data_start if start <= data_start else _first_line_start(window, low, stop)
    if first >= stop:
        return LineBlock(b"", np.empty(0, dtype=np.int64))
    body = window[first - low : stop - low]
    oversized: list[int] = []
    if body and body[-1] != NEWLINE:
        tail = _end_of_line(uri, window[stop - low :], stop + _READ_AHEAD, max_line_bytes)
        if tail is None:
            last = body.rfind(b"\n") + 1
            oversized.append(first + last)
            body = body[:last]
        else:
            body += tail
    return _without_long_lines(body, first, max_line_bytes, oversized)


def _first_line_start(window: bytes, low: int, stop: int) -> int:
    """The offset of the first line that begins in ``(low, stop)``, or ``stop`` if none does, from the bytes
    read from ``low`` on (the byte before the range first)."""
    hit = window.find(b"\n", 0, stop - low)
    return low + hit + 1 if hit >= 0 else stop


def _end_of_line(uri: str, ahead: bytes, ahead_end: int, max_line_bytes: int) -> bytes | None:
    """The bytes that finish the line crossing the range's end: from the read-ahead, or, for a line longer
    than it, read on from ``ahead_end``; ``None`` once more than the cap were seen."""
    hit = ahead.find(b"\n")
    if hit >= 0:
        return ahead[: hit + 1]
    if len(ahead) < _READ_AHEAD:
        return ahead  # the file ends inside the line
    with open_ranged(uri) as handle:
        handle.seek(ahead_end)
        rest = _rest_of_line(handle, max_line_bytes - len(ahead))
    return None if rest is None else ahead + rest


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
    keep = ends > starts
    block = LineBlock(body, (starts[keep] + base).astype(np.int64), tuple(oversized))
    long_lines = ((ends - starts) > max_line_bytes)[keep]
    if not long_lines.any():
        return block
    dropped = drop_lines(block, long_lines)
    return LineBlock(dropped.data, dropped.offsets, tuple(sorted([*oversized, *block.offsets[long_lines].tolist()])))


def drop_lines(block: LineBlock, drop: np.ndarray) -> LineBlock:
    """The block without the non-empty lines where ``drop`` is true (their offsets leave with them)."""
    starts, ends = line_bounds(block.data)
    nonempty = np.flatnonzero(ends > starts)
    extents = np.append(starts[1:], len(block.data))
    removed = set(nonempty[drop].tolist())
    data = b"".join(block.data[s:e] for i, (s, e) in enumerate(zip(starts, extents)) if i not in removed)
    return LineBlock(data, block.offsets[~drop], block.oversized)


def blank_lines(block: LineBlock) -> np.ndarray:
    """A mask over the block's non-empty lines: true where the line holds only spaces and tabs."""
    buffer = np.frombuffer(block.data, dtype=np.uint8)
    starts, ends = line_bounds(block.data)
    nonempty = ends > starts
    content = np.concatenate(([0], np.cumsum((buffer != 0x20) & (buffer != 0x09) & (buffer != 0x0D))))
    return ((content[ends] - content[starts]) == 0)[nonempty]


def invalid_utf8_lines(block: LineBlock) -> np.ndarray:
    """A mask over the block's non-empty lines: true where the line is not valid UTF-8."""
    try:
        block.data.decode("utf-8")
        return np.zeros(len(block.offsets), dtype=bool)
    except UnicodeDecodeError:
        pass
    starts, ends = line_bounds(block.data)
    nonempty = ends > starts
    return np.array([not _decodes(block.data[s:e]) for s, e in zip(starts[nonempty], ends[nonempty])], dtype=bool)


def _decodes(line: bytes) -> bool:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def line_bounds(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive, without the line break) of every line in ``data``."""
    buffer = np.frombuffer(data, dtype=np.uint8)
    breaks = np.flatnonzero(buffer == NEWLINE)
    starts = np.concatenate(([0], breaks + 1)).astype(np.int64)
    ends = np.concatenate((breaks, [len(buffer)])).astype(np.int64)
    if len(buffer) == 0 or buffer[-1] == NEWLINE:
        starts, ends = starts[:-1], ends[:-1]
    while len(starts):  # trailing carriage returns end a line too (a parser reads a bare CR as a line break)
        carriage = (ends > starts) & (buffer[np.maximum(ends - 1, 0)] == 0x0D)
        if not carriage.any():
            break
        ends = ends - carriage.astype(np.int64)
    return starts, ends


def odd_quote_lines(block: LineBlock, quotechar: str) -> np.ndarray:
    """A mask over the block's non-empty lines: true where the line has an odd number of quote characters.

    In well-formed CSV, quotes inside a field are doubled, so an odd count means
    an unterminated quote, or a quoted field that runs over a line break.
    """
    buffer = np.frombuffer(block.data, dtype=np.uint8)
    starts, ends = line_bounds(block.data)
    nonempty = ends > starts
    quotes = np.flatnonzero(buffer == ord(quotechar))
    if len(quotes) == 0:
        return np.zeros(int(nonempty.sum()), dtype=bool)
    counts = (np.searchsorted(quotes, ends) - np.searchsorted(quotes, starts))[nonempty]
    return (counts % 2).astype(bool)


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


def compression_of(uri: str) -> str | None:
    """The compression a file's suffix names (gzip, bz2, xz, zstd, …), or ``None``."""
    from fsspec.utils import infer_compression

    return infer_compression(uri)


def content_size_guess(size: int, compressed: bool) -> int:
    """Bytes of content in a file of ``size`` bytes; compressed text is taken to expand four times."""
    return size * 4 if compressed else size


def read_head(uri: str, size: int, file_size: int | None = None) -> bytes:
    """Up to ``size`` bytes from the start of the file's content, decompressed if it is compressed.

    ``file_size``, the file's size from a listing (or any size it is known to reach), makes it one ranged
    read: one GET on an object store, with no request for the size first.
    """
    if file_size and not compression_of(uri):
        return read_range(uri, 0, min(size, file_size))
    opened = fsspec.open(uri, "rb", compression="infer") if compression_of(uri) else open_ranged(uri)
    with opened as handle:
        return handle.read(size)


def stream_line_blocks(uri: str, data_start: int, max_line_bytes: int, block_bytes: int = 1 << 24) -> Iterator[LineBlock]:
    """The whole lines of a (compressed) stream from ``data_start``, a block at a time.

    Offsets count bytes of the decompressed content. Memory stays bounded by
    ``block_bytes + max_line_bytes`` whatever the stream holds: a line over the
    cap is skipped while streaming (a decompression bomb of one endless line
    costs time, never memory) and reported as oversized.
    """
    with fsspec.open(uri, "rb", compression="infer") as handle:
        _skip(handle, data_start)
        carry, carry_at, skipping = b"", data_start, None
        while data := handle.read(block_bytes):
            if skipping is not None:
                newline = data.find(b"\n")
                if newline < 0:
                    carry_at += len(data)
                    continue
                yield LineBlock(b"", np.empty(0, dtype=np.int64), (skipping,))
                skipping, carry_at, data = None, carry_at + newline + 1, data[newline + 1 :]
            buffer = carry + data
            cut = buffer.rfind(b"\n") + 1
            if cut:
                yield _without_long_lines(buffer[:cut], carry_at, max_line_bytes, [])
                carry, carry_at = buffer[cut:], carry_at + cut
            else:
                carry = buffer
            if len(carry) > max_line_bytes:
                skipping, carry_at, carry = carry_at, carry_at + len(carry), b""
        if skipping is not None:
            yield LineBlock(b"", np.empty(0, dtype=np.int64), (skipping,))
        elif carry:
            yield _without_long_lines(carry, carry_at, max_line_bytes, [])


def _skip(handle: BinaryIO, count: int) -> None:
    while count > 0:
        block = handle.read(min(count, _READ_AHEAD))
        if not block:
            return
        count -= len(block)
