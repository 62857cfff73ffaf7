"""The byte-range rule: for any file and any cut points, every line is read exactly once."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from squall.formats.lines import cut_ranges, read_line_range

lines_strategy = st.lists(
    st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"x")), min_size=0, max_size=60
)


def write_lines(path: Path, lines: list[bytes], trailing_newline: bool, crlf: bool) -> bytes:
    end = b"\r\n" if crlf else b"\n"
    data = end.join(lines) + (end if trailing_newline and lines else b"")
    path.write_bytes(data)
    return data


@settings(max_examples=300, deadline=None)
@given(
    lines=lines_strategy,
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=12),
    trailing_newline=st.booleans(),
    crlf=st.booleans(),
    data_start_line=st.integers(min_value=0, max_value=2),
)
def test_every_line_is_read_exactly_once_whatever_the_cut_points(
    tmp_path_factory, lines, cuts, trailing_newline, crlf, data_start_line
):
    path = tmp_path_factory.mktemp("lines") / "data.txt"
    data = write_lines(path, lines, trailing_newline, crlf)
    starts = [0] + [i + 1 for i, byte in enumerate(data) if byte == 0x0A and i + 1 < len(data)]
    data_start = starts[min(data_start_line, len(starts) - 1)] if data else 0
    bounds = sorted({data_start, len(data), *(data_start + c for c in cuts if data_start + c < len(data))})
    pieces = [read_line_range(str(path), lo, hi, data_start, 1 << 20) for lo, hi in zip(bounds, bounds[1:])]
    assert b"".join(piece.data for piece in pieces) == data[data_start:]
    offsets = [int(o) for piece in pieces for o in piece.offsets]
    expected = [s for s in starts if s >= data_start and data[s:].split(b"\n", 1)[0].rstrip(b"\r")]
    assert offsets == expected


@given(size=st.integers(min_value=0, max_value=10_000), start=st.integers(min_value=0, max_value=50), target=st.integers(min_value=1, max_value=3_000))
def test_cut_ranges_tile_the_data_without_gaps(size, start, target):
    ranges = cut_ranges(min(start, size), size, target)
    covered = [b for lo, hi in ranges for b in range(lo, hi)]
    assert covered == list(range(min(start, size), size))
    assert all(hi - lo <= target for lo, hi in ranges)


def test_a_line_longer_than_the_cap_is_left_out_and_reported_by_offset(tmp_path):
    path = tmp_path / "huge.jsonl"
    path.write_bytes(b'{"a": 1}\n' + b"x" * 300_000 + b'\n{"a": 2}\n')
    whole = read_line_range(str(path), 0, path.stat().st_size, 0, max_line_bytes=100_000)
    assert whole.oversized == (9,)
    assert whole.data == b'{"a": 1}\n{"a": 2}\n'
    assert whole.offsets.tolist() == [0, 300_010]
    head = read_line_range(str(path), 0, 20, 0, max_line_bytes=100_000)
    assert head.oversized == (9,) and head.data == b'{"a": 1}\n' and head.offsets.tolist() == [0]
    tail = read_line_range(str(path), 20, path.stat().st_size, 0, max_line_bytes=100_000)
    assert tail.oversized == () and tail.offsets.tolist() == [300_010]
