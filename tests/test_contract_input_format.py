"""The ``InputFormat`` contract (:mod:`squall.formats.base`), run against every format: Parquet, CSV and JSON Lines
files the test writes, and SQL tables on SQLite and on the real PostgreSQL server.

Each test uses the format as planning and the workers do (describe, cut,
read each piece), through the protocol only, and compares what it read with
the rows the test wrote, value by value.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support.data import make_frame

from squall.formats.base import OFFSET_COLUMN, BadRecord, FileInfo, InputFormat, ReadOptions, SourceFile
from squall.formats.registry import FORMATS, get_format
from squall.formats.table import type_name
from squall.sql.drivers import connect, list_tables, quote

POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
ROWS = 40_000  # a text file of several MB: several times the head that describing one may read
# What describing a file may read: a CSV or JSON Lines file's head (1 MiB), a Parquet file's footer, with some slack.
MAY_READ = {"csv": (1 << 20) + (1 << 18), "jsonl": (1 << 20) + (1 << 18), "parquet": 1 << 18}
BATCH_ROWS = 1_000
WORDS = ["alpha", "beta", "gamma, with a comma", 'delta "quoted"', "epsilon é"]


@dataclass
class Source:
    """One input under the contract: the format, the file (or table) and its options, and the rows it holds."""

    name: str
    format: InputFormat
    file: SourceFile
    options: ReadOptions
    frame: pd.DataFrame
    exact_rows: bool
    """Whether ``describe`` knows the row count (a footer, a COUNT) rather than estimating it from a head."""
    local: bool


def frame_of(rows: int) -> pd.DataFrame:
    frame = make_frame(rows, seed=5)
    frame["word"] = [WORDS[i % len(WORDS)] for i in range(rows)]
    return frame


def write_text(frame: pd.DataFrame, path: Path, fmt: str) -> None:
    """Every float written as Python's shortest exact repr, so that reading it back is value by value."""
    records = frame.to_dict(orient="records")
    with open(path, "w", encoding="utf-8") as handle:
        if fmt == "jsonl":
            handle.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
            return
        handle.write(",".join(frame.columns) + "\n")
        for record in records:
            handle.write(",".join(_csv_field(value) for value in record.values()) + "\n")


def _csv_field(value: object) -> str:
    if isinstance(value, str):
        return '"' + value.replace('"', '""') + '"'
    return repr(value)


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    return frame_of(ROWS)


@pytest.fixture(params=["parquet", "csv", "jsonl", "sql-sqlite", "sql-postgresql"])
def source(request: pytest.FixtureRequest, rows: pd.DataFrame, tmp_path: Path) -> Iterator[Source]:
    kind = request.param
    if kind.startswith("sql"):
        url = POSTGRES if kind == "sql-postgresql" else f"sqlite:///{tmp_path}/input.db"
        table = f"rows_{os.getpid()}_{random.randrange(10**6)}"
        with connect(url) as connection, connection.cursor() as cursor:
            cursor.adbc_ingest(table, pa.Table.from_pandas(rows, preserve_index=False), mode="create")
            connection.commit()
        options = ReadOptions(query=f"SELECT * FROM {quote(table)}", partition_column="id")
        try:
            yield Source(kind, get_format("sql"), SourceFile(url, 0), options, rows, True, False)
        finally:
            with connect(url) as connection, connection.cursor() as cursor:
                if table in list_tables(url, cursor):
                    cursor.execute(f"DROP TABLE {quote(table)}")
                connection.commit()
        return
    path = tmp_path / f"rows.{kind}"
    if kind == "parquet":
        pq.write_table(pa.Table.from_pandas(rows, preserve_index=False), path, row_group_size=5_000)
    else:
        write_text(rows, path, kind)
    assert FORMATS.by_extension(str(path)) == kind
    yield Source(kind, get_format(kind), SourceFile(str(path), path.stat().st_size), ReadOptions(), rows, kind == "parquet", True)


def planned(source: Source, info: FileInfo) -> ReadOptions:
    """The options planning hands the workers: every column, with the types the description found."""
    return replace(
        source.options, columns=tuple(info.schema.names), column_types=tuple((f.name, type_name(f.type)) for f in info.schema)
    )


def read_all(source: Source, info: FileInfo, target_rows: int) -> tuple[list[pd.DataFrame], list[BadRecord]]:
    """Each piece's rows, read in the order ``cut`` gave the pieces; every batch checked on the way."""
    options, bad = planned(source, info), list[BadRecord]()
    frames = []
    for piece, _ in source.format.cut(info, target_rows):
        batches = list(source.format.read(piece, options, BATCH_ROWS, bad))
        for batch in batches:
            assert 0 < batch.num_rows <= BATCH_ROWS and batch.schema.names[-1] == OFFSET_COLUMN
        frames.append(pa.Table.from_batches(batches).to_pandas() if batches else pd.DataFrame())
    return frames, bad


def test_the_format_is_registered_under_its_name(source):
    assert source.format.name in FORMATS.names() and source.format.name == source.name.split("-")[0]


def test_describe_reads_only_a_head_or_metadata_and_estimates_the_rows(source):
    io = psutil.Process().io_counters()
    info = source.format.describe(source.file, source.options)
    read = psutil.Process().io_counters().read_chars - io.read_chars
    assert set(info.schema.names) == set(source.frame.columns)
    if source.exact_rows:
        assert info.rows == ROWS
    else:
        assert abs(info.rows - ROWS) <= ROWS * 0.1, f"estimated {info.rows} rows of {ROWS}"
    if source.local:
        allowed = MAY_READ[source.name]
        assert source.file.size > 2 * allowed
        assert read <= allowed, f"describing {source.file.size} bytes read {read}"


@pytest.mark.parametrize("target_rows", [3_000, 7_000])
def test_cut_pieces_cover_every_row_exactly_once_in_order_and_read_gives_the_files_values(source, target_rows):
    info = source.format.describe(source.file, source.options)
    pieces = source.format.cut(info, target_rows)
    assert len(pieces) >= ROWS // target_rows // 2, f"{len(pieces)} pieces of about {target_rows} rows"
    assert sum(estimate for _, estimate in pieces) == pytest.approx(ROWS, rel=0.1)
    frames, bad = read_all(source, info, target_rows)
    assert bad == []
    ids = [frame["id"].to_numpy() for frame in frames if len(frame)]
    for before, after in zip(ids, ids[1:]):
        assert before.max() < after.min(), "pieces out of order, or overlapping"
    got = pd.concat(frames, ignore_index=True)
    offsets = got.pop(OFFSET_COLUMN)
    assert offsets.is_unique, "two rows share an _offset"
    if source.local:  # in a file, rows come in the file's order; a query's rows within a key range in any order
        assert offsets.is_monotonic_increasing
    got = got.sort_values("id").reset_index(drop=True)
    assert sorted(got.columns) == sorted(source.frame.columns)
    pd.testing.assert_frame_equal(got[list(source.frame.columns)], source.frame, check_exact=True)
    np.testing.assert_array_equal(got["id"].to_numpy(), np.arange(ROWS))
