"""The ``Output`` contract (:mod:`squall.io.output`), run against every implementation and place: a directory on
local disk and on the loopback S3 server, a table on SQLite and on the real PostgreSQL server.

Each test drives the output through the protocol as the coordinator and
finalize do, and checks what it holds the way a reader would (files listed
and read with fsspec, tables queried with SQL), never through the output itself.
"""

from __future__ import annotations

import io
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import fsspec
import pandas as pd
import pyarrow as pa
import pytest
from support.s3 import filesystem

from squall.errors import OutputExistsError, SpecError
from squall.io import storage
from squall.io.commit import OutputDir
from squall.io.output import Committed, Output, open_output
from squall.sql.drivers import connect, list_tables, literal, quote
from squall.sql.sink import CHUNK_COLUMN, OUTPUTS_TABLE, TableOutput, staging_prefix

POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


@dataclass
class Place:
    """One output under the contract: what a spec names (``output``, ``table``), the output it opens, and how a
    reader sees what it holds."""

    given: str
    table: str | None
    output: Output
    ext: str
    rows_under: Callable[[str], pd.DataFrame]
    """The rows committed under a name :meth:`Output.commit` returned."""
    data_rows: Callable[[], pd.DataFrame]
    """Every row of the output's predictions (not its error rows)."""
    attempt_exists: Callable[[str], bool]
    is_final: Callable[[], bool]

    def write(self, uri: str, frame: pd.DataFrame, fmt: str | None = None) -> str:
        """Write ``frame`` as an attempt named ``uri``, in two batches; returns what the sink's ``close`` returned."""
        sink = self.output.part_sink(uri, fmt or self.ext)
        table = pa.Table.from_pandas(frame, preserve_index=False)
        for batch in table.to_batches(max_chunksize=max(1, len(frame) // 2 + 1)):
            sink.write(batch)
        assert sink.rows == len(frame)
        closed = sink.close()
        assert closed == uri
        return closed

    def relative(self, committed: Committed) -> str:
        """The committed name relative to the output, as a manifest lists it."""
        return committed.uri[len(self.output.uri) + 1 :]


def rows(start: int, count: int, scale: float) -> pd.DataFrame:
    ids = list(range(start, start + count))
    return pd.DataFrame({"id": ids, "prediction": [i * scale for i in ids]})


def same_rows(got: pd.DataFrame, want: pd.DataFrame) -> None:
    got = got[list(want.columns)].sort_values("id").reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want.sort_values("id").reset_index(drop=True), check_dtype=False)


# --- the places ----------------------------------------------------------------------------------------------------


def directory(fs: fsspec.AbstractFileSystem, given: str) -> Place:
    output = open_output(OutputDir.location_of(given, None))
    root = fs._strip_protocol(output.uri)

    def read(uri: str) -> pd.DataFrame:
        return pd.read_parquet(io.BytesIO(fs.cat_file(fs._strip_protocol(uri))))

    def data_rows() -> pd.DataFrame:
        names = [p for p in fs.ls(root, detail=False, refresh=True) if p.rsplit("/", 1)[-1].startswith("part-")]
        return pd.concat([read(name) for name in names], ignore_index=True) if names else rows(0, 0, 1.0)

    def attempt_exists(uri: str) -> bool:
        fs.invalidate_cache()
        return bool(fs.exists(fs._strip_protocol(uri)))

    return Place(given, None, output, "parquet", read, data_rows, attempt_exists,
                 lambda: bool(fs.invalidate_cache() or fs.exists(f"{root}/_SUCCESS")))


def table(url: str, name: str) -> Place:
    output = open_output(TableOutput.location_of(url, name))

    def query(sql: str) -> pd.DataFrame:
        with connect(url) as connection, connection.cursor() as cursor:
            cursor.execute(sql)
            return cursor.fetch_arrow_table().to_pandas()

    def rows_under(uri: str) -> pd.DataFrame:
        target = f"{name}_errors" if "/_errors/" in uri else name
        chunk = int(uri.rsplit("/", 1)[-1].split("-")[1])
        return query(f"SELECT * FROM {quote(target)} WHERE {CHUNK_COLUMN} = {chunk}")

    def attempt_exists(uri: str) -> bool:
        kind, chunk, attempt = uri.rsplit("/", 1)[-1].split("-")  # part-00007-a2: staging table ..._p00007_a2
        with connect(url) as connection, connection.cursor() as cursor:
            return f"{staging_prefix(name)}{kind[0]}{chunk}_{attempt}" in list_tables(url, cursor)

    def is_final() -> bool:
        final = query(f"SELECT success FROM {OUTPUTS_TABLE} WHERE name = {literal(name)}")
        return bool(len(final) and final["success"][0] == 1)

    def data_rows() -> pd.DataFrame:
        with connect(url) as connection, connection.cursor() as cursor:
            present = name in list_tables(url, cursor)
        return query(f"SELECT * FROM {quote(name)}") if present else rows(0, 0, 1.0)  # no table yet: no rows

    return Place(url, name, output, "parquet", rows_under, data_rows, attempt_exists, is_final)


def drop_tables(url: str, name: str) -> None:
    """Drop the test's tables, its staging tables and its row in ``_squall_outputs``."""
    with connect(url) as connection, connection.cursor() as cursor:
        present = list_tables(url, cursor)
        for found in present:
            if found in (name, f"{name}_errors") or found.startswith(staging_prefix(name)):
                cursor.execute(f"DROP TABLE {quote(found)}")
        if OUTPUTS_TABLE in present:
            cursor.execute(f"DELETE FROM {OUTPUTS_TABLE} WHERE name = {literal(name)}")
        connection.commit()


@pytest.fixture(params=["dir-local", "dir-s3", "table-sqlite", "table-postgresql"])
def place(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Place]:
    kind = request.param
    if kind == "dir-local":
        monkeypatch.chdir(tmp_path)
        yield directory(fsspec.filesystem("file"), "out")  # a relative path: location_of makes it absolute
    elif kind == "dir-s3":
        s3 = request.getfixturevalue("s3")
        given = f"s3://{request.getfixturevalue('bucket')}/out"
        storage.configure({"endpoint_url": s3.endpoint}, [given])
        yield directory(filesystem(s3), given)
    else:
        url = POSTGRES if kind == "table-postgresql" else f"sqlite:///{tmp_path}/contract.db"
        name = f"preds_{os.getpid()}_{random.randrange(10**6)}"
        try:
            yield table(url, name)
        finally:
            drop_tables(url, name)


# --- the contract --------------------------------------------------------------------------------------------------


def test_location_of_spells_what_the_spec_names_and_refuses_a_table_where_it_does_not_fit(place):
    kind = type(place.output)
    assert kind.location_of(place.given, place.table) == place.output.uri
    wrong = None if place.table else "preds"
    with pytest.raises(SpecError, match="`table`"):
        kind.location_of(place.given, wrong)


def test_claim_makes_the_location_the_jobs_and_refuses_another_owner_without_overwrite(place):
    out = place.output
    assert out.owner() is None
    out.claim("job-a", overwrite=False)
    assert out.owner() == "job-a"
    out.claim("job-a", overwrite=False)  # its own job claims it again (a resume)
    committed = out.commit(place.write(out.attempt_part(0, 1, place.ext), rows(0, 10, 1.0)), out.committed_part(0, place.ext))
    with pytest.raises(OutputExistsError, match="overwrite"):
        out.claim("job-b", overwrite=False)
    assert out.owner() == "job-a"
    same_rows(place.rows_under(committed.uri), rows(0, 10, 1.0))
    out.claim("job-b", overwrite=True)
    assert out.owner() == "job-b"
    assert place.data_rows().empty, "overwrite kept the old job's rows"


def test_a_part_sinks_attempt_is_committed_and_counted_from_the_output_itself(place):
    out = place.output
    out.claim("job", overwrite=False)
    predictions, errors = rows(0, 31, 2.0), rows(7, 3, 0.0)
    part = place.write(out.attempt_part(0, 1, place.ext), predictions)
    error_part = place.write(out.attempt_errors(0, 1), errors, fmt="parquet")
    committed = out.commit(part, out.committed_part(0, place.ext))
    committed_errors = out.commit(error_part, out.committed_errors(0))
    assert committed.rows == 31 and committed_errors.rows == 3
    same_rows(place.rows_under(committed.uri), predictions)
    same_rows(place.rows_under(committed_errors.uri), errors)
    same_rows(place.data_rows(), predictions)


def test_a_sink_that_writes_no_row_leaves_nothing_and_an_abandoned_one_is_discarded(place):
    out = place.output
    out.claim("job", overwrite=False)
    empty = out.part_sink(out.attempt_part(0, 1, place.ext), place.ext)
    assert empty.close() is None and not place.attempt_exists(out.attempt_part(0, 1, place.ext))
    uri = out.attempt_part(0, 2, place.ext)
    abandoned = out.part_sink(uri, place.ext)
    abandoned.write(pa.RecordBatch.from_pandas(rows(0, 5, 1.0), preserve_index=False))
    abandoned.abandon()
    out.discard(uri)
    assert not place.attempt_exists(uri) and place.data_rows().empty


def test_committing_a_chunk_again_replaces_its_rows_and_never_doubles_them(place):
    out = place.output
    out.claim("job", overwrite=False)
    first = out.commit(place.write(out.attempt_part(0, 1, place.ext), rows(0, 20, 1.0)), out.committed_part(0, place.ext))
    second = out.commit(place.write(out.attempt_part(0, 2, place.ext), rows(0, 12, 3.0)), out.committed_part(0, place.ext))
    assert (first.rows, second.rows) == (20, 12)
    same_rows(place.rows_under(second.uri), rows(0, 12, 3.0))
    out.remove_unlisted({place.relative(second)})  # finalize keeps only what the manifest lists
    same_rows(place.data_rows(), rows(0, 12, 3.0))


def test_discard_removes_a_losing_attempt_and_ignores_one_that_is_not_there(place):
    out = place.output
    out.claim("job", overwrite=False)
    uri = place.write(out.attempt_part(3, 1, place.ext), rows(0, 8, 1.0))
    assert place.attempt_exists(uri)
    out.discard(uri)
    assert not place.attempt_exists(uri)
    out.discard(uri)
    out.discard(None)
    assert place.data_rows().empty


def leave_attempts(place: Place) -> tuple[Committed, list[str]]:
    """One committed chunk, and three attempts nobody committed (two of a chunk, one of another's error rows)."""
    out = place.output
    out.claim("job", overwrite=False)
    committed = out.commit(place.write(out.attempt_part(0, 1, place.ext), rows(0, 6, 1.0)), out.committed_part(0, place.ext))
    left = [place.write(out.attempt_part(1, a, place.ext), rows(100, 4, 1.0)) for a in (1, 2)]
    left.append(place.write(out.attempt_errors(2, 1), rows(200, 2, 0.0), fmt="parquet"))
    assert all(place.attempt_exists(uri) for uri in left)
    return committed, left


# On an object store an attempt is written under a part name beside the committed parts (committing records it
# instead of copying it), so clear_attempts cannot tell them apart: finalize's remove_unlisted removes them (the
# next test proves it for every place).
@pytest.mark.parametrize("place", ["dir-local", "table-sqlite", "table-postgresql"], indirect=True)
def test_clear_attempts_removes_every_attempt_kept_apart_from_committed_parts_and_keeps_committed_rows(place):
    committed, left = leave_attempts(place)
    place.output.clear_attempts()
    assert not [uri for uri in left if place.attempt_exists(uri)]
    same_rows(place.rows_under(committed.uri), rows(0, 6, 1.0))
    same_rows(place.data_rows(), rows(0, 6, 1.0))


def test_what_finalize_removes_leaves_exactly_the_committed_rows(place):
    committed, left = leave_attempts(place)
    place.output.clear_attempts()
    place.output.remove_unlisted({place.relative(committed)})
    assert not [uri for uri in left if place.attempt_exists(uri)]
    same_rows(place.data_rows(), rows(0, 6, 1.0))


def test_remove_unlisted_deletes_committed_chunks_the_manifest_does_not_name_and_returns_them(place):
    out = place.output
    out.claim("job", overwrite=False)
    kept = out.commit(place.write(out.attempt_part(0, 1, place.ext), rows(0, 5, 1.0)), out.committed_part(0, place.ext))
    gone = out.commit(place.write(out.attempt_part(1, 1, place.ext), rows(5, 5, 1.0)), out.committed_part(1, place.ext))
    gone_errors = out.commit(place.write(out.attempt_errors(1, 1), rows(9, 1, 0.0), fmt="parquet"), out.committed_errors(1))
    removed = out.remove_unlisted({place.relative(kept)})
    assert sorted(removed) == sorted([place.relative(gone), place.relative(gone_errors)])
    same_rows(place.data_rows(), rows(0, 5, 1.0))
    assert out.remove_unlisted({place.relative(kept)}) == []


def test_finalize_writes_the_manifest_and_then_the_final_mark_and_remove_final_markers_withdraws_only_the_mark(place):
    out = place.output
    out.claim("job", overwrite=False)
    assert out.manifest() is None and not place.is_final()
    committed = out.commit(place.write(out.attempt_part(0, 1, place.ext), rows(0, 4, 1.0)), out.committed_part(0, place.ext))
    manifest = {"job_id": "job", "state": "SUCCEEDED", "parts": [{"path": place.relative(committed), "rows": 4}]}
    out.finalize(manifest, success=False)
    assert out.manifest() == manifest and not place.is_final()
    out.finalize(manifest, success=True)
    assert out.manifest() == manifest and place.is_final()
    out.remove_final_markers()
    assert not place.is_final() and out.manifest() == manifest
    same_rows(place.data_rows(), rows(0, 4, 1.0))
