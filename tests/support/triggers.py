"""Files dropped into watched folders the ways users drop them, and what a watch must have started."""

from __future__ import annotations

import io
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from support.data import make_frame, write_frame

ROWS = 40  # rows per file: file i holds ids [i * ROWS, (i + 1) * ROWS)


SETTLE_S, POLL_S = 2.0, 0.2  # what start_watch asks for


def template(tmp_path: Path, model: Path, **extra: str) -> Path:
    # One worker, not forked from a zygote: a job on 40 rows then takes about a second, mostly the worker's start.
    lines = [f'model = "{model}"', f'output = "{tmp_path / "out"}"', "workers = 1", "fork = false", 'key = ["id"]']
    lines += [f'{name} = "{value}"' for name, value in extra.items()]
    path = tmp_path / "template.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def parquet_bytes(index: int) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(make_frame(ROWS, seed=index, start=index * ROWS), preserve_index=False), buffer)
    return buffer.getvalue()


def drop_quick(inbox: Path, index: int) -> None:
    write_frame(make_frame(ROWS, seed=index, start=index * ROWS), inbox / f"f{index:02d}.parquet", "parquet")


def drop_slowly(inbox: Path, index: int, pieces: int = 4, pause_s: float = 0.5) -> None:
    """Several writes with pauses longer than a poll: the file is incomplete (unreadable) between them."""
    data = parquet_bytes(index)
    step = len(data) // pieces + 1
    with open(inbox / f"f{index:02d}.parquet", "wb") as handle:
        for start in range(0, len(data), step):
            handle.write(data[start:start + step])
            handle.flush()
            time.sleep(pause_s)


def drop_renamed(inbox: Path, index: int) -> None:
    """Written under a partial name, then renamed into place."""
    partial = inbox / f"f{index:02d}.parquet.tmp"
    partial.write_bytes(parquet_bytes(index)[:100])
    time.sleep(0.6)
    partial.write_bytes(parquet_bytes(index))
    partial.rename(inbox / f"f{index:02d}.parquet")


def complete_outputs(out: Path) -> set[str]:
    return {p.parent.name for p in out.glob("*/_SUCCESS")}


def jobs_in_store(home: Path) -> int:
    with closing(sqlite3.connect(home / "squall.db")) as store:
        return int(store.execute("SELECT COUNT(*) FROM jobs").fetchone()[0])


def assert_no_second_job(home: Path, count: int, settle_s: float = SETTLE_S, poll_s: float = POLL_S) -> None:
    """A file that counted twice would start a job once it settled again: past a settle time and a listing (twice
    over, for a loaded machine), the store still holds ``count`` jobs."""
    deadline = time.monotonic() + 2 * (settle_s + poll_s) + 1.0
    while time.monotonic() < deadline:
        assert jobs_in_store(home) == count
        time.sleep(poll_s / 2)
