"""The planner: balanced chunks from footers and byte ranges, packing small files and cutting big ones."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from support.data import make_frame, write_frame

from squall.plan.planner import make_plan
from squall.plan.split import split_chunk
from squall.spec import JobSpec


def spec_for(folder: Path, **fields) -> JobSpec:
    return JobSpec(model="m.joblib", input=[str(folder)], output="out", key=["id"], **fields)


def covered_rows(plan) -> list[tuple[str, int]]:
    """Every (file, row) a plan's parquet chunks read, by reading them."""
    from squall.formats.registry import get_format

    rows: list[tuple[str, int]] = []
    for chunk in plan.chunks:
        for piece in chunk.pieces:
            for batch in get_format("parquet").read(piece, plan.read_options, 97, []):
                rows.extend((piece.uri, int(i)) for i in batch.column("id").to_pylist())
    return rows


def test_many_small_files_are_packed_and_one_big_file_is_cut(tmp_path):
    folder = tmp_path / "in"
    for i in range(40):
        write_frame(make_frame(50, seed=i, start=i * 50), folder / f"small-{i:02d}.parquet", "parquet")
    write_frame(make_frame(10_000, seed=99, start=2_000), folder / "big.parquet", "parquet", row_group_size=500)
    plan = make_plan(spec_for(folder, chunk_rows=1_000), "job")
    assert all(chunk.est_rows <= 1_000 for chunk in plan.chunks)
    assert sum(chunk.est_rows for chunk in plan.chunks) == 12_000
    packed = [c for c in plan.chunks if len({p.uri for p in c.pieces}) > 1]
    assert packed and max(len(c.pieces) for c in packed) == 20
    assert len(plan.chunks) == 12
    ids = [row for _, row in covered_rows(plan)]
    assert sorted(ids) == list(range(12_000))


def test_automatic_sizing_gives_every_worker_several_chunks_and_a_fine_tail(tmp_path):
    folder = tmp_path / "in"
    write_frame(make_frame(40_000), folder / "data.parquet", "parquet", row_group_size=2_000)
    plan = make_plan(spec_for(folder, workers=2), "job")
    assert len(plan.chunks) >= 8
    sizes = [c.est_rows for c in plan.chunks]
    assert sizes[-1] < sizes[0]
    assert sorted(row for _, row in covered_rows(plan)) == list(range(40_000))


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_text_files_are_planned_from_sizes_without_reading_them_whole(fmt, tmp_path):
    path = write_frame(make_frame(20_000), tmp_path / f"data.{fmt}", fmt)
    plan = make_plan(spec_for(path, chunk_rows=1_000), "job")
    assert 15 <= len(plan.chunks) <= 25
    pieces = [p for c in plan.chunks for p in c.pieces]
    assert pieces[0].start == plan.files[0].data_start and pieces[-1].stop == path.stat().st_size
    assert all(a.stop == b.start for a, b in zip(pieces, pieces[1:]))


def test_a_split_chunk_covers_exactly_the_rows_of_its_parent(tmp_path):
    folder = tmp_path / "in"
    write_frame(make_frame(5_000), folder / "data.parquet", "parquet", row_group_size=700)
    plan = make_plan(spec_for(folder, chunk_rows=5_000), "job")
    (whole,) = plan.chunks
    queue, leaves = [whole], []
    while queue:
        chunk = queue.pop()
        if chunk.est_rows > 300:
            queue.extend(split_chunk(chunk, 0, 0))
        else:
            leaves.append(chunk)
    split_plan = type(plan)(**{**plan.__dict__, "chunks": tuple(leaves)})
    assert sorted(row for _, row in covered_rows(split_plan)) == list(range(5_000))
    assert pq.ParquetFile(folder / "data.parquet").metadata.num_rows == 5_000
