"""Tiny chunks do not mean tiny files: parts below ``min_part_bytes`` are merged at finalize, every row once,
the manifest mapping every chunk to its rows, and a coordinator SIGKILLed while merging loses nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from support.cli import run_cli
from support.faults import assert_exact_output

import squall
from squall.store import JobStore

ROWS = 300
WIDTH = len("000000,000000\n")
HEADER = b"id,id_copy\n"
FLOOR = 64 * 1024


def one_row_lines(folder: Path) -> Path:
    """A CSV file of ``ROWS`` fixed-width lines, so that ``chunk_rows = 1`` cuts one line per chunk."""
    folder.mkdir()
    path = folder / "ids.csv"
    path.write_bytes(HEADER + b"".join(f"{i:06d},{i:06d}\n".encode() for i in range(ROWS)))
    return path


def spec_fields(tmp_path: Path) -> dict[str, object]:
    return {"model": "faultmodels:steady", "input": [str(tmp_path / "in")], "output": str(tmp_path / "out"),
            "key": ["id"], "features": ["id_copy"], "chunk_rows": 1, "workers": 2, "min_part_bytes": FLOOR,
            "job_id": "tiny"}


def assert_chunks_map_to_their_rows(output: Path, job_id: str) -> None:
    """Each manifest entry's rows, read from its file at ``first_row``, are exactly the lines its chunk cut."""
    manifest = json.loads((output / "_manifest.json").read_text())
    with JobStore.at(None) as store:
        pieces = {d.chunk_id: d.chunk.pieces[0] for d in store.done_chunks(job_id)}
    tables = {path: pq.read_table(output / path) for path in {entry["path"] for entry in manifest["parts"]}}
    assert sorted(entry["chunk"] for entry in manifest["parts"]) == sorted(pieces)
    for entry in manifest["parts"]:
        ids = tables[entry["path"]].slice(entry.get("first_row", 0), entry["rows"]).column("id").to_pylist()
        piece = pieces[entry["chunk"]]
        starts = [len(HEADER) + i * WIDTH for i in ids]
        assert all(max(piece.start, len(HEADER)) <= start < piece.stop for start in starts), (entry, piece)
        expected = [i for i in range(ROWS) if max(piece.start, len(HEADER)) <= len(HEADER) + i * WIDTH < piece.stop]
        assert ids == expected


def test_one_row_chunks_leave_few_files_every_row_once_and_each_chunk_mapped_to_its_rows(tmp_path):
    one_row_lines(tmp_path / "in")
    result = squall.run(squall.JobSpec.model_validate(spec_fields(tmp_path)))

    assert (result.state, result.rows_out, result.chunks) == ("SUCCEEDED", ROWS, ROWS)
    files = sorted(p.name for p in (tmp_path / "out").glob("part-*"))
    assert len(files) == 1, files  # 300 parts of about a kilobyte each fit one merged file
    assert result.parts == tuple(str(tmp_path / "out" / name) for name in files)
    assert_exact_output(tmp_path / "out", set(range(ROWS)))
    assert_chunks_map_to_their_rows(tmp_path / "out", "tiny")


def test_parts_at_or_above_the_floor_and_a_floor_of_zero_are_left_as_they_are(tmp_path):
    one_row_lines(tmp_path / "in")
    result = squall.run(squall.JobSpec.model_validate({**spec_fields(tmp_path), "min_part_bytes": 0}))

    assert result.state == "SUCCEEDED"
    assert len(list((tmp_path / "out").glob("part-*"))) == ROWS
    assert_exact_output(tmp_path / "out", set(range(ROWS)))


def test_by_default_many_tiny_parts_are_merged_and_a_few_are_kept_one_per_chunk(tmp_path):
    one_row_lines(tmp_path / "in")
    fields = {key: value for key, value in spec_fields(tmp_path).items() if key != "min_part_bytes"}
    many = squall.run(squall.JobSpec.model_validate(fields))
    assert (many.state, many.rows_out, len(list((tmp_path / "out").glob("part-*")))) == ("SUCCEEDED", ROWS, 1)
    assert_exact_output(tmp_path / "out", set(range(ROWS)))

    few = {**fields, "output": str(tmp_path / "few"), "chunk_rows": 4, "job_id": "few"}  # 75 parts: fewer than 100
    result = squall.run(squall.JobSpec.model_validate(few))
    assert (result.state, result.chunks, len(list((tmp_path / "few").glob("part-*")))) == ("SUCCEEDED", 75, 75)
    assert_exact_output(tmp_path / "few", set(range(ROWS)))


# The coordinator kills itself (SIGKILL, a real one) right after one step of the merge; each step leaves the
# output and the store in another state, which `squall resume` must finish without losing or doubling a row.
KILLER = textwrap.dedent(
    """
    import json, os, signal, sys
    import squall
    from squall.io.commit import OutputDir
    from squall.store import JobStore

    step, fields = sys.argv[1], json.loads(sys.argv[2])
    owner = {"merged": OutputDir, "recorded": JobStore, "deleting": OutputDir}[step]
    name = {"merged": "merge_parts", "recorded": "move_parts", "deleting": "discard"}[step]
    original = getattr(owner, name)

    def then_die(self, *args):
        result = original(self, *args)
        if step != "deleting" or os.path.basename(str(args[0])).startswith("part-"):
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(owner, name, then_die)
    squall.run(squall.JobSpec.model_validate(fields))
    """
)


@pytest.mark.parametrize("step", ["merged", "recorded", "deleting"])
def test_a_coordinator_killed_while_merging_parts_loses_and_doubles_nothing_once_resumed(tmp_path, step):
    one_row_lines(tmp_path / "in")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    killed = subprocess.run([sys.executable, "-c", KILLER, step, json.dumps(spec_fields(tmp_path))], env=env,
                            capture_output=True, text=True, timeout=600, check=False)

    assert killed.returncode == -9, killed.stderr  # the kill landed, mid-merge
    out = tmp_path / "out"
    assert not (out / "_SUCCESS").exists() and not (out / "_manifest.json").exists()
    merged = [p.name for p in out.glob("part-*-n*.parquet")]
    small = list(out.glob("part-?????.parquet"))
    assert merged and (small if step != "deleting" else True), (merged, len(small))
    if step == "deleting":
        assert 0 < len(small) < ROWS, "the kill landed after some parts were deleted and before the rest were"
    resumed = run_cli("resume", "tiny", "-q")

    assert resumed.returncode == 0, resumed.stderr
    assert len(list(out.glob("part-*"))) == 1
    assert_exact_output(out, set(range(ROWS)))
    assert_chunks_map_to_their_rows(out, "tiny")
