"""Split a chunk in two halves that cover exactly its rows (used on timeouts, memory kills and the plan's tail)."""

from __future__ import annotations

from dataclasses import replace

from squall.plan.chunk import Chunk, Piece


def can_split(chunk: Chunk, min_rows: int = 1) -> bool:
    """Whether ``chunk`` can be halved into two non-empty chunks of at least ``min_rows`` estimated rows."""
    if chunk.est_rows < 2 * max(1, min_rows):
        return False
    if len(chunk.pieces) > 1:
        return True
    return _halve_piece(chunk.pieces[0], chunk.est_rows) is not None


def split_chunk(chunk: Chunk, first_id: int, second_id: int) -> tuple[Chunk, Chunk]:
    """Two chunks, with the given ids, that together read exactly the rows of ``chunk``."""
    if len(chunk.pieces) > 1:
        middle = _middle_piece_index(chunk)
        left, right = chunk.pieces[:middle], chunk.pieces[middle:]
        rows_left = round(chunk.est_rows * _weight(left) / max(_weight(chunk.pieces), 1))
    else:
        halves = _halve_piece(chunk.pieces[0], chunk.est_rows)
        if halves is None:
            raise ValueError(f"chunk {chunk.chunk_id} cannot be split further")
        left, right = (halves[0],), (halves[1],)
        rows_left = chunk.est_rows // 2
    bytes_left = chunk.est_bytes // 2
    return (
        replace(chunk, chunk_id=first_id, pieces=left, est_rows=rows_left, est_bytes=bytes_left),
        replace(chunk, chunk_id=second_id, pieces=right, est_rows=chunk.est_rows - rows_left,
                est_bytes=chunk.est_bytes - bytes_left),
    )


def _weight(pieces: tuple[Piece, ...]) -> int:
    return sum(max(1, p.row_count or (p.stop - p.start)) for p in pieces)


def _middle_piece_index(chunk: Chunk) -> int:
    return max(1, len(chunk.pieces) // 2)


def _halve_piece(piece: Piece, est_rows: int) -> tuple[Piece, Piece] | None:
    if piece.kind in ("bytes", "keyrange"):
        if piece.stop - piece.start < 2:
            return None
        middle = (piece.start + piece.stop) // 2
        return replace(piece, stop=middle), replace(piece, start=middle)
    if piece.kind == "rowgroups":
        if piece.row_count is None and piece.stop - piece.start > 1:
            middle = (piece.start + piece.stop) // 2
            return replace(piece, stop=middle), replace(piece, start=middle)
        rows = piece.row_count if piece.row_count is not None else est_rows
        if rows < 2:
            return None
        half = rows // 2
        # The second half reads on to the end of what the piece covered, so the
        # union is exact even when ``est_rows`` is only an estimate.
        rest = None if piece.row_count is None else rows - half
        return (
            replace(piece, row_count=half),
            replace(piece, row_offset=piece.row_offset + half, row_count=rest),
        )
    return None
