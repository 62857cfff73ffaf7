"""The planner: list inputs, describe each file from metadata, cut and pack them into balanced chunks.

Planning reads footers (Parquet) or the first megabyte of each file
(CSV/JSONL), never the data, and checks that every key and feature column
exists before any work starts. On an object store the files are described
many at a time (:data:`DESCRIBE_THREADS`), each with one ranged read.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from typing import Callable, TypeVar

import pyarrow as pa

from squall.errors import InputError
from squall.formats.base import (
    OFFSET_COLUMN,
    SOURCE_COLUMN,
    FileInfo,
    InputFormat,
    ReadOptions,
    SourceFile,
)
from squall.formats.registry import detect_format, get_format
from squall.formats.table import type_name
from squall.io.storage import is_remote, is_transient, retrying
from squall.plan.chunk import Chunk, Piece
from squall.plan.sources import list_inputs
from squall.plan.split import can_split, split_chunk
from squall.spec import JobSpec

CHUNKS_PER_WORKER = 8
MIN_AUTO_CHUNK_ROWS = 1_000
MAX_AUTO_CHUNK_ROWS = 1_000_000
MAX_AUTO_CHUNK_BYTES = 256 * 1024 * 1024
TAIL_SPLIT_LEVELS = 3
DESCRIBE_THREADS = 32
"""Files described at once while planning: enough to keep an object store's round trips overlapped."""
T = TypeVar("T")


@dataclass(frozen=True)
class Plan:
    """What a job will do: its chunks, the columns it reads, and how planning saw the inputs."""

    job_id: str
    format: str
    files: tuple[FileInfo, ...]
    chunks: tuple[Chunk, ...]
    read_options: ReadOptions
    key: tuple[str, ...]
    features: tuple[str, ...]
    target_rows: int

    @property
    def est_rows(self) -> int:
        return sum(chunk.est_rows for chunk in self.chunks)

    @property
    def total_bytes(self) -> int:
        return sum(info.file.size for info in self.files)


def make_plan(spec: JobSpec, job_id: str, only: Callable[[list[FileInfo]], dict[str, int]] | None = None) -> Plan:
    """Plan ``spec`` as job ``job_id``; raises :class:`InputError` for anything that would fail later.

    ``only``, given every described file, names the files to plan and the first
    row group of each (0: the whole file); the others are described but not planned.
    """
    files = _retried(partial(list_inputs, spec.input), ", ".join(spec.input))
    format_name = _job_format(spec, files)
    fmt = get_format(format_name)
    options = _read_options(spec, files)
    infos = _describe_all(fmt, files, options)
    key, features = _columns(spec, infos)
    options = _with_columns(options, infos, key, features)
    target = _target_rows(spec, infos)
    selected = only(infos) if only else {info.file.uri: 0 for info in infos}
    units = [
        unit
        for info in infos
        if info.file.uri in selected
        for unit in _from_group(fmt.cut(info, target), selected[info.file.uri], info)
    ]
    chunks = _pack(job_id, format_name, units, target, {i.file.uri: i for i in infos})
    if not (spec.chunk_rows or spec.chunk_bytes):
        chunks = _refine_tail(chunks, spec.workers)
    return Plan(job_id, format_name, tuple(infos), tuple(chunks), options, key, features, target)


def _describe_all(fmt: InputFormat, files: list[SourceFile], options: ReadOptions) -> list[FileInfo]:
    """Every file described, in order; on an object store :data:`DESCRIBE_THREADS` at a time, since each
    description is a round trip (a footer or a head) and waiting for them one by one is most of planning.
    Local files are described one by one: threads would only contend for the interpreter.

    The first file that fails, in order, raises, as it would one by one.
    """
    schemas = _SharedSchemas()

    def describe(file: SourceFile) -> FileInfo:
        info = _retried(partial(fmt.describe, file, options), file.uri)
        return replace(info, schema=schemas.shared(info.schema))

    if len(files) < 2 or not any(is_remote(file.uri) for file in files):
        return [describe(file) for file in files]
    with ThreadPoolExecutor(min(DESCRIBE_THREADS, len(files)), thread_name_prefix="squall-describe") as pool:
        return list(pool.map(describe, files))


class _SharedSchemas:
    """One schema object per distinct schema: a footer's schema is a new object per file, and a hundred
    thousand copies of the same one, kept until planning ends, would be most of its memory."""

    def __init__(self) -> None:
        self._distinct: list[pa.Schema] = []
        self._lock = threading.Lock()

    def shared(self, schema: pa.Schema) -> pa.Schema:
        """The first schema seen that equals ``schema`` (metadata aside), or ``schema`` itself if none does."""
        with self._lock:
            # Arrow's equals, not a dict: hashing a schema costs ten times more, and inputs rarely hold many.
            for known in self._distinct:
                if known.equals(schema):
                    return known
            self._distinct.append(schema)
            return schema


def _retried(read: Callable[[], T], what: str) -> T:
    """A planning read, tried again while the store throttles or drops connections; if it never answers,
    an :class:`InputError` before any work, naming what could not be read."""
    try:
        return retrying(read)
    except Exception as exc:
        if not is_transient(exc):
            raise
        raise InputError(f"{what}: the store kept failing ({exc}); nothing was started, run the job again later") from None


def _job_format(spec: JobSpec, files: list[SourceFile]) -> str:
    if spec.format != "auto":
        return spec.format
    formats = {detect_format(f.uri) for f in files}
    if len(formats) > 1:
        raise InputError(
            f"the inputs mix formats ({', '.join(sorted(formats))}); run one job per format or set `format`"
        )
    return formats.pop()


def _read_options(spec: JobSpec, files: list[SourceFile]) -> ReadOptions:
    """The spec's format options; ``.tsv`` files are tab-separated unless ``delimiter`` was given."""
    tab_separated = files and all(".tsv" in f.uri.lower() for f in files) and "delimiter" not in spec.model_fields_set
    return ReadOptions.from_spec(spec, **({"delimiter": "\t"} if tab_separated else {}))


def _columns(spec: JobSpec, infos: list[FileInfo]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    described = [i for i in infos if len(i.schema)]
    if not described:
        return tuple(spec.key), tuple(spec.features or ())
    first = described[0].schema.names
    reserved = {OFFSET_COLUMN, SOURCE_COLUMN}
    features = spec.features or [c for c in first if c not in spec.key and c not in reserved]
    if not features:
        raise InputError(f"{described[0].file.uri}: no feature columns left after the key; set `features`")
    wanted = [*spec.key, *features]
    for info in described:
        missing = [c for c in wanted if c not in info.schema.names]
        if missing:
            what = "key" if set(missing) <= set(spec.key) else "feature"
            raise InputError(
                f"{info.file.uri}: missing {what} column(s) {missing}; the file has {info.schema.names}. "
                "Fix `key`/`features` or the file"
            )
    return tuple(spec.key), tuple(features)


def _with_columns(
    options: ReadOptions, infos: list[FileInfo], key: tuple[str, ...], features: tuple[str, ...]
) -> ReadOptions:
    described = [i for i in infos if len(i.schema)]
    schema = described[0].schema if described else None
    types = tuple((f.name, type_name(f.type)) for f in schema) if schema is not None else ()
    columns = tuple(dict.fromkeys([*key, *features]))
    return replace(options, column_types=types, columns=columns)


def _target_rows(spec: JobSpec, infos: list[FileInfo]) -> int:
    rows = sum(i.rows for i in infos)
    size = sum(i.file.size for i in infos)
    bytes_per_row = size / rows if rows else 1.0
    if spec.chunk_rows:
        return spec.chunk_rows
    if spec.chunk_bytes:
        return max(1, int(spec.chunk_bytes / bytes_per_row))
    per_worker = -(-rows // (spec.workers * CHUNKS_PER_WORKER)) if rows else MIN_AUTO_CHUNK_ROWS
    by_bytes = max(1, int(MAX_AUTO_CHUNK_BYTES / bytes_per_row))
    target = max(MIN_AUTO_CHUNK_ROWS, min(per_worker, MAX_AUTO_CHUNK_ROWS, by_bytes))
    return max(target, min(_largest_remote_row_group(infos), MAX_AUTO_CHUNK_ROWS, by_bytes))


def _largest_remote_row_group(infos: list[FileInfo]) -> int:
    """The most rows in one row group of a Parquet file on an object store: a row slice downloads its whole
    row group, so an automatic chunk smaller than that would fetch the group once per slice."""
    return max((max(i.row_group_rows) for i in infos if i.row_group_rows and is_remote(i.file.uri)), default=0)


def _pack(
    job_id: str, format_name: str, units: list[tuple[Piece, int]], target: int, files: dict[str, FileInfo]
) -> list[Chunk]:
    """Greedily pack consecutive pieces into chunks of at most ``target`` estimated rows."""
    chunks: list[Chunk] = []
    pending: list[Piece] = []
    pending_rows = 0

    def close() -> None:
        if pending:
            pieces = tuple(pending)
            chunks.append(Chunk(job_id, len(chunks), format_name, pieces, pending_rows, _bytes(pieces, files)))
            pending.clear()

    for piece, rows in units:
        if pending and pending_rows + rows > target:
            close()
            pending_rows = 0
        pending.append(piece)
        pending_rows += rows
    close()
    return chunks


def _from_group(units: list[tuple[Piece, int]], first: int, info: FileInfo) -> list[tuple[Piece, int]]:
    """Only the rows of row groups ``first`` and later (the groups appended since the last run)."""
    if first == 0:
        return units
    kept = []
    for piece, rows in units:
        if piece.stop <= first:
            continue
        if piece.start < first:
            piece = replace(piece, start=first)
            rows = sum(info.row_group_rows[first : piece.stop])
        kept.append((piece, rows))
    return kept


def _refine_tail(chunks: list[Chunk], workers: int) -> list[Chunk]:
    """Cut the last ``workers`` chunks into eighths, so that workers finish together instead of one idling."""
    head, tail = chunks[:-workers], chunks[-workers:]
    refined: list[Chunk] = []
    for chunk in tail:
        refined.extend(_split_times(chunk, TAIL_SPLIT_LEVELS))
    return [replace(chunk, chunk_id=index) for index, chunk in enumerate(head + refined)]


def _split_times(chunk: Chunk, levels: int) -> list[Chunk]:
    if levels == 0 or not can_split(chunk, MIN_AUTO_CHUNK_ROWS) or _one_remote_row_group(chunk):
        return [chunk]
    left, right = split_chunk(chunk, chunk.chunk_id, chunk.chunk_id)
    return _split_times(left, levels - 1) + _split_times(right, levels - 1)


def _one_remote_row_group(chunk: Chunk) -> bool:
    """A row slice downloads its whole row group: on an object store, eight slices of the tail's last
    group would fetch it eight times, which costs more than the idle worker they save."""
    piece = chunk.pieces[0]
    return len(chunk.pieces) == 1 and piece.kind == "rowgroups" and piece.stop - piece.start == 1 and is_remote(piece.uri)


def _bytes(pieces: tuple[Piece, ...], files: dict[str, FileInfo]) -> int:
    """Estimated input bytes: byte ranges as they are, row groups by their size, whole files by theirs."""
    total = 0
    for piece in pieces:
        info = files[piece.uri]
        if piece.kind == "bytes":
            total += piece.stop - piece.start
        elif piece.kind == "keyrange" and info.key_range:
            low, stop = info.key_range
            total += info.file.size * (piece.stop - piece.start) // max(1, stop - low)
        elif piece.kind == "rowgroups" and info.row_group_bytes:
            group_bytes = sum(info.row_group_bytes[piece.start : piece.stop])
            if piece.row_count is not None and info.row_group_rows[piece.start]:
                group_bytes = group_bytes * piece.row_count // info.row_group_rows[piece.start]
            total += group_bytes
        else:
            total += info.file.size
    return total
