"""Planning at scale: footers and listings on an object store fetched concurrently, with one request per file
and the same chunks as one by one; a big CSV planned from its head alone."""

from __future__ import annotations

import io
from itertools import pairwise

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support.s3 import filesystem
from support.s3server import Request, S3Server

from squall.io import storage
from squall.plan import planner
from squall.plan.planner import make_plan
from squall.spec import JobSpec

FOLDERS = 4
FILES_PER_FOLDER = 6


def s3_spec(s3: S3Server, uri: str, **fields) -> JobSpec:
    spec = JobSpec(model="m.joblib", input=[uri], output="out", key=["id"], endpoint_url=s3.endpoint, **fields)
    storage.configure(storage.connection_options({}, s3.endpoint), [uri])
    return spec


def small_files_on_s3(s3: S3Server, bucket: str) -> str:
    fs = filesystem(s3)
    for index in range(FOLDERS * FILES_PER_FOLDER):
        ids = np.arange(index * 10, index * 10 + 10, dtype=np.int64)
        buffer = io.BytesIO()
        pq.write_table(pa.table({"id": ids, "x": ids * 0.5}), buffer)
        fs.pipe_file(f"{bucket}/in/day={index % FOLDERS}/part-{index:03d}.parquet", buffer.getvalue())
    return f"s3://{bucket}/in/"


def is_footer_get(bucket: str):
    return lambda r: r.method == "GET" and r.path.startswith(f"/{bucket}/in/") and not r.is_listing


def is_folder_listing(r: Request) -> bool:
    return r.is_listing and "day%3D" in r.query


def test_footers_and_folders_on_s3_are_fetched_concurrently_and_plan_as_one_by_one(s3, bucket, monkeypatch):
    uri = small_files_on_s3(s3, bucket)
    spec = s3_spec(s3, uri, chunk_rows=50)
    with s3.traffic.held(is_footer_get(bucket), 4), s3.traffic.held(is_folder_listing, 2):
        concurrent = make_plan(spec, "job")
    assert s3.traffic.most_at_once(is_footer_get(bucket)) >= 4, "footers were read one at a time"
    assert s3.traffic.most_at_once(is_folder_listing) >= 2, "folders were listed one at a time"
    footers = s3.traffic.requests(is_footer_get(bucket))
    assert len(footers) == FOLDERS * FILES_PER_FOLDER, "one ranged GET per file"
    assert all(r.range_bytes() is not None for r in footers)
    assert not s3.traffic.requests(lambda r: r.method == "HEAD" and r.path.startswith(f"/{bucket}/in/"))

    monkeypatch.setattr(planner, "DESCRIBE_THREADS", 1)
    one_by_one = make_plan(spec, "job")
    assert [c.to_dict() for c in concurrent.chunks] == [c.to_dict() for c in one_by_one.chunks]
    assert concurrent.files == one_by_one.files
    assert concurrent.est_rows == FOLDERS * FILES_PER_FOLDER * 10
    assert len({id(info.schema) for info in concurrent.files}) == 1, "every file keeps its own copy of one schema"


def test_a_footer_larger_than_the_first_read_is_read_whole(s3, bucket):
    columns = {f"a_rather_long_column_name_{i:04d}": np.arange(3, dtype=np.int64) for i in range(1_500)}
    buffer = io.BytesIO()
    pq.write_table(pa.table({"id": np.arange(3, dtype=np.int64), **columns}), buffer)
    data = buffer.getvalue()
    assert int.from_bytes(data[-8:-4], "little") > 64 * 1024
    filesystem(s3).pipe_file(f"{bucket}/in/wide.parquet", data)
    plan = make_plan(s3_spec(s3, f"s3://{bucket}/in/wide.parquet"), "job")
    assert plan.est_rows == 3 and len(plan.files[0].schema) == 1_501
    assert len(s3.traffic.requests(is_footer_get(bucket))) == 2


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_big_text_file_on_s3_is_planned_from_one_read_of_its_head(fmt, s3, bucket):
    line = b"1,0.25,0.5\n" if fmt == "csv" else b'{"id":1,"x":0.25,"y":0.5}\n'
    body = (b"id,x,y\n" if fmt == "csv" else b"") + line * (48 * 1024 * 1024 // len(line))
    filesystem(s3).pipe_file(f"{bucket}/in/big.{fmt}", body)
    plan = make_plan(s3_spec(s3, f"s3://{bucket}/in/big.{fmt}", chunk_rows=100_000), "job")
    reads = s3.traffic.requests(lambda r: r.path == f"/{bucket}/in/big.{fmt}" and r.method == "GET")
    assert [r.range_bytes() for r in reads] == [1 << 20], "planning read more than the head"
    pieces = [p for c in plan.chunks for p in c.pieces]
    assert len(pieces) >= 10 and pieces[-1].stop == len(body)
    assert all(a.stop == b.start for a, b in pairwise(pieces))


def test_each_text_piece_on_s3_is_one_ranged_get_and_every_line_is_read_once(s3, bucket):
    from squall.formats.registry import get_format

    body = b"id,x\n" + b"".join(b"%d,%s\n" % (i, b"y" * (i % 37)) for i in range(20_000))
    filesystem(s3).pipe_file(f"{bucket}/in/rows.csv", body)
    plan = make_plan(s3_spec(s3, f"s3://{bucket}/in/rows.csv", chunk_rows=1_500), "job")
    pieces = [p for c in plan.chunks for p in c.pieces]
    before = len(s3.traffic.requests())
    ids = [i for p in pieces for b in get_format("csv").read(p, plan.read_options, 4_096, []) for i in b.column("id").to_pylist()]
    during = s3.traffic.requests()[before:]
    assert sorted(ids) == list(range(20_000))
    # one GET per piece, and one for the header line the first piece reads the column names from
    assert [r.method for r in during] == ["GET"] * (len(pieces) + 1) and all(r.range_bytes() for r in during)


def test_automatic_chunks_on_s3_never_slice_a_row_group(s3, bucket):
    buffer = io.BytesIO()
    ids = np.arange(40_000, dtype=np.int64)
    pq.write_table(pa.table({"id": ids, "x": ids * 0.5}), buffer, row_group_size=10_000)
    filesystem(s3).pipe_file(f"{bucket}/in/groups.parquet", buffer.getvalue())
    plan = make_plan(s3_spec(s3, f"s3://{bucket}/in/groups.parquet", workers=2), "job")
    pieces = [p for c in plan.chunks for p in c.pieces]
    assert [(p.start, p.stop, p.row_count) for p in pieces] == [(g, g + 1, None) for g in range(4)]


def test_a_worker_reads_a_parquet_footer_once_per_version_of_the_object(s3, bucket):
    from squall.formats.registry import get_format

    def upload(offset: int) -> None:
        buffer = io.BytesIO()
        ids = np.arange(offset, offset + 4_000, dtype=np.int64)
        pq.write_table(pa.table({"id": ids, "x": ids * 0.5}), buffer, row_group_size=1_000)
        filesystem(s3).pipe_file(f"{bucket}/in/ids.parquet", buffer.getvalue())

    def read_all() -> list[int]:
        plan = make_plan(s3_spec(s3, f"s3://{bucket}/in/ids.parquet", chunk_rows=1_000), "job")
        return [i for c in plan.chunks for p in c.pieces
                for b in get_format("parquet").read(p, plan.read_options, 500, []) for i in b.column("id").to_pylist()]

    def footer_gets(since: int) -> int:
        gets = s3.traffic.requests(lambda r: r.method == "GET" and r.path.endswith("/ids.parquet"))[since:]
        return sum(1 for r in gets if (r.range_bytes() or 0) >= 8 and r.range.endswith(f"-{size - 1}"))

    upload(0)
    size = filesystem(s3).size(f"{bucket}/in/ids.parquet")
    seen = len(s3.traffic.requests(lambda r: r.method == "GET" and r.path.endswith("/ids.parquet")))
    assert read_all() == list(range(4_000))
    assert footer_gets(seen) == 2, "the planner's footer read and the first piece's; the other three pieces reuse it"
    upload(10_000)  # rewritten: same size, another ETag
    assert read_all() == list(range(10_000, 14_000)), "a stale footer was used"
