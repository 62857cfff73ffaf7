"""Small parts merged at finalize: tiny chunks must not mean tiny files.

A job of many small chunks (one row each, say) commits one small part per
chunk. At finalize, the committed Parquet parts below ``min_part_bytes`` are
merged, in chunk order, into files of about :data:`MERGED_PART_BYTES`
(``part-<first chunk>-<last chunk>.parquet``). The store keeps mapping
every chunk to its rows: its ``part`` becomes the merged file and
``part_first_row`` the row its rows begin at; the manifest says the same.

Crash safety, one group at a time:

1. the merged file is written whole under ``_tmp/`` and renamed into place
   (on an object store, one whole-object PUT);
2. the store records the move of every chunk of the group, in one transaction;
3. the group's old files are deleted.

Killed before 2, the store still names the old parts: the next finalize
(``squall resume``) merges them again into the same name, and a merged file
nobody lists is removed with the other unlisted parts. Killed after 2, the
old files are unlisted and are removed the same way. No row is lost, and a
reader of the finished output (``_SUCCESS``, written after all of this) sees
each row once.
"""

from __future__ import annotations

from dataclasses import dataclass

from squall.io import layout
from squall.io.output import MergesParts, Output
from squall.store import DoneChunk, JobStore

MERGED_PART_BYTES = 32 * 1024 * 1024
# Below this many small files a job keeps one file per chunk: a few small files cost a reader nothing, and a
# file per chunk lets an incremental run redo one chunk instead of every chunk sharing a merged file.
MIN_SMALL_PARTS = 100


@dataclass(frozen=True)
class MergeGroup:
    """Small files merged into one: each file with the chunks whose rows lie in it, in order."""

    files: tuple[tuple[str, tuple[DoneChunk, ...]], ...]

    @property
    def chunks(self) -> list[DoneChunk]:
        return [chunk for _, chunks in self.files for chunk in chunks]

    def target(self, output: str, prefix: str) -> str:
        """The merged file's URI, named by its first and last chunk and how many chunks it holds: a repeated
        merge of the same files writes the same name, and no merge writes over one of its own files (each
        holds fewer chunks than the merge)."""
        ids = [chunk.chunk_id for chunk in self.chunks]
        return layout.join(output, f"part-{prefix}{min(ids):05d}-{max(ids):05d}-n{len(ids)}.parquet")

    def moves(self, target: str) -> list[tuple[int, str, int]]:
        """Where each chunk's rows begin in the merged file: the files are concatenated in order, and a chunk
        of an already merged file keeps its place relative to that file's start."""
        moves, start = [], 0
        for _, chunks in self.files:
            moves += [(chunk.chunk_id, target, start + (chunk.part_first_row or 0)) for chunk in chunks]
            start += sum(chunk.rows_out for chunk in chunks)
        return moves


def merge_groups(done: list[DoneChunk], sizes: dict[str, int], floor: int) -> list[MergeGroup]:
    """The groups to merge: the files below ``floor`` bytes that done chunks lie in, in the order of their
    first chunk, cut into groups of about :data:`MERGED_PART_BYTES`; a group of one file is left out, and
    nothing is merged while fewer than :data:`MIN_SMALL_PARTS` files are small."""
    small: dict[str, list[DoneChunk]] = {}
    for chunk in done:
        if chunk.part is not None and sizes.get(chunk.part, floor) < floor:
            small.setdefault(chunk.part, []).append(chunk)
    if len(small) < MIN_SMALL_PARTS:
        return []
    groups: list[list[tuple[str, tuple[DoneChunk, ...]]]] = [[]]
    total = 0
    for part, chunks in small.items():
        if total >= MERGED_PART_BYTES:
            groups.append([])
            total = 0
        groups[-1].append((part, tuple(chunks)))
        total += sizes[part]
    return [MergeGroup(tuple(group)) for group in groups if len(group) > 1]


def coalesce(store: JobStore, job_id: str, output: Output, output_uri: str, floor: int, prefix: str = "") -> int:
    """Merge the job's committed Parquet parts below ``floor`` bytes (module docstring); returns how many files
    fewer the output has. ``floor`` 0, or an output of no part files (a table), merges none."""
    if floor <= 0 or not isinstance(output, MergesParts):
        return 0
    done = [d for d in store.done_chunks(job_id) if d.part and d.part.endswith(".parquet")]
    fewer = 0
    for group in merge_groups(done, output.part_sizes(), floor):
        target = group.target(output_uri, prefix)
        files = [part for part, _ in group.files]
        output.merge_parts(files, target)
        store.move_parts(job_id, group.moves(target))
        for old in files:
            output.discard(old)
        fewer += len(files) - 1
    return fewer
