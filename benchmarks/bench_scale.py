"""Scale beyond this machine's data: many files, a huge CSV, a million chunks, S3 read throughput.

Four measurements, each printed as a table row (``--parts`` picks some):

``plan-local`` / ``plan-s3``
    Planning N small Parquet files (10 rows each, all the same bytes) in a
    local folder, and under a prefix of an S3 server on loopback (moto's
    server mode, started here). Planning runs in a fresh child process
    (``make_plan``, as ``squall run`` calls it), which reports its wall
    seconds and its peak RSS above what it held once imports were done
    (``VmHWM`` minus ``VmRSS`` before planning), at N/4 and at N files: the
    growth from N/4 to N, per file, is set beside the size of what the plan
    must hold per file (its chunk descriptors as JSON), so a planner whose
    memory grows faster than its output shows. On S3 the server counts the
    requests planning made and the most it answered at once.
``csv``
    A CSV file of ``--csv-gb`` GB planned as one job: a header and 8 MiB of
    valid lines, then a hole (a sparse file: the disk holds the 8 MiB; every
    byte past them reads as zero). Planning must not read it, so the figure
    is the child's bytes read (``rchar`` of ``/proc/self/io``: every byte any
    ``read`` call returned, Arrow's included) beside the file's size, with the
    wall seconds and the chunk count.
``chunks``
    A million-chunk job: the chunk descriptors of a job over 1,000,000 one-row
    chunks enqueued in the job store through its public API
    (``JobStore.create_job``), then every chunk claimed and completed as the
    coordinator does (``claim`` + ``complete``) with a no-op result (no worker,
    no model): seconds per chunk, and the store's size on disk once all are
    done. The coordinator's other per-chunk costs (messages, part files,
    renames) are measured end to end by ``compare.py``'s one-row jobs, not here.
``s3-read``
    Read throughput of one Parquet file and the same rows as CSV, on the S3
    server on loopback: squall's reader (the input format's ``read`` over
    every piece of the file's plan, as workers call it, one after the other
    in this process) against pyarrow's own (``pyarrow.fs.S3FileSystem`` with
    ``pq.read_table`` / ``pyarrow.csv.read_csv``) and s3fs's own
    (``pq.read_table`` / ``pyarrow.csv.read_csv`` over ``s3fs.open``), the three
    interleaved, ``--runs`` runs each, medians in MB/s of the object's size.
    Target: squall >= 0.9x each.

moto keeps objects in Python memory and answers from this process's threads,
so the S3 figures measure what the clients ask for (requests, concurrency,
bytes), on a server slower and nearer than a real bucket.

    python benchmarks/bench_scale.py               # small sizes, a few minutes
    python benchmarks/bench_scale.py --full        # the issue's sizes: 100,000 files, 20 GB, 1M chunks
    python benchmarks/bench_scale.py --parts plan-s3,s3-read --files 2000
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

MIB = 1024 * 1024
BUCKET = "squall-scale"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
READ_TARGET = 0.9
PARTS = ("plan-local", "plan-s3", "csv", "chunks", "s3-read")


# -- the child: plan once, report what it cost -------------------------------------------------------------


def _proc_status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def _bytes_read() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise KeyError("rchar")


def child_plan(pattern: str, endpoint: str | None, chunk_rows: int | None, twice: bool) -> None:
    """Plan ``pattern`` and print one JSON line: seconds, peak MiB above the start, bytes read, chunks."""
    from squall.io import storage
    from squall.plan.planner import make_plan
    from squall.plan.sources import list_inputs
    from squall.spec import JobSpec

    spec = JobSpec(model="m.joblib", input=[pattern], output="/tmp/unused-out", key=["id"], workers=2,
                   chunk_rows=chunk_rows, endpoint_url=endpoint)
    storage.configure(storage.connection_options(spec.storage_options, endpoint), [pattern])
    base_rss = _proc_status("VmRSS")
    started = time.perf_counter()
    list_inputs(spec.input)  # the listing alone, timed apart (its memory counts in the peak), then as part of the plan
    list_seconds = time.perf_counter() - started
    read_before = _bytes_read()
    started, cpu_before = time.perf_counter(), time.process_time()
    plan = make_plan(spec, "scale")
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_before
    first_read = _bytes_read() - read_before
    if twice:  # again, now that the modules planning imports are loaded: only the input's bytes are read
        read_before = _bytes_read()
        make_plan(spec, "scale")
    read = _bytes_read() - read_before
    descriptors = sum(len(chunk.to_json()) for chunk in plan.chunks)
    print(json.dumps({
        "seconds": seconds, "cpu_seconds": cpu_seconds, "list_seconds": list_seconds, "peak_mib": (_proc_status("VmHWM") - base_rss) / MIB, "bytes_read": read,
        "first_bytes_read": first_read,
        "files": len(plan.files), "chunks": len(plan.chunks), "descriptor_bytes": descriptors,
        "est_rows": plan.est_rows,
    }))


def run_child(args: list[str]) -> dict[str, Any]:
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"child {args} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- a loopback S3 server that counts what it answers -----------------------------------------------------


class Counting:
    """WSGI middleware: requests answered, and the most in flight at once, per method."""

    def __init__(self, app: Callable[..., Any]) -> None:
        self.app = app
        self.lock = threading.Lock()
        self.in_flight = 0
        self.most = 0
        self.requests: dict[str, int] = {}
        self.busy_s = 0.0

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        method = environ["REQUEST_METHOD"]
        with self.lock:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
            self.requests[method] = self.requests.get(method, 0) + 1
        started = time.perf_counter()
        try:
            return self.app(environ, start_response)
        finally:
            with self.lock:
                self.in_flight -= 1
                self.busy_s += time.perf_counter() - started

    def reset(self) -> None:
        with self.lock:
            self.most, self.requests, self.busy_s = 0, {}, 0.0


@dataclass
class Server:
    endpoint: str
    counting: Counting


def s3_server() -> Iterator[Server]:
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    os.environ.update(CREDENTIALS)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    counting = Counting(server._server.app)  # type: ignore[union-attr]
    server._server.app = counting  # type: ignore[union-attr]
    host, port = server.get_host_and_port()
    try:
        yield Server(f"http://{host}:{port}", counting)
    finally:
        server.stop()


def s3fs_filesystem(endpoint: str) -> Any:
    import fsspec

    return fsspec.filesystem("s3", endpoint_url=endpoint, skip_instance_cache=True, use_listings_cache=False)


# -- (a) planning many small files ------------------------------------------------------------------------


def small_parquet() -> bytes:
    ids = np.arange(10, dtype=np.int64)
    table = pa.table({"id": ids, **{f"f{i}": np.linspace(0, 1, 10, dtype=np.float32) for i in range(8)}})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def local_files(folder: Path, count: int) -> str:
    blob = small_parquet()
    for index in range(count):
        sub = folder / f"part={index // 1000:04d}"
        if index % 1000 == 0:
            sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f-{index:07d}.parquet").write_bytes(blob)
    return str(folder)


def s3_files(server: Server, prefix: str, count: int) -> str:
    """``count`` objects put straight into the server's memory (this process's moto backend): over HTTP, moto
    takes about 7 ms an object, which would make setting up 100,000 longer than planning them."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    fs = s3fs_filesystem(server.endpoint)
    if not fs.exists(BUCKET):
        fs.mkdir(BUCKET)
    backend = s3_backends[DEFAULT_ACCOUNT_ID]["global"]
    blob = small_parquet()
    for index in range(count):
        backend.put_object(BUCKET, f"{prefix}/part={index // 1000:04d}/f-{index:07d}.parquet", blob)
    return f"s3://{BUCKET}/{prefix}/"


def plan_row(where: str, figures: dict[str, Any], small: dict[str, Any], extra: str = "") -> list[str]:
    files, small_files = figures["files"], small["files"]
    grown = (figures["peak_mib"] - small["peak_mib"]) * MIB / max(files - small_files, 1)
    descriptor = (figures["descriptor_bytes"] - small["descriptor_bytes"]) / max(files - small_files, 1)
    return [where, f"{files:,}", f"{figures['seconds']:.2f}", f"{figures['cpu_seconds']:.2f}",
            f"{figures['list_seconds']:.2f}", f"{files / figures['seconds']:,.0f}",
            f"{figures['peak_mib']:.0f} (at {small_files:,}: {small['peak_mib']:.0f})",
            f"{grown:,.0f} B", f"{descriptor:,.0f} B", f"{figures['chunks']:,}", extra]


def bench_plan_local(count: int) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        small = run_child(["_plan", local_files(Path(tmp) / "quarter", count // 4), "--chunk-rows", "10000"])
        figures = run_child(["_plan", local_files(Path(tmp) / "whole", count), "--chunk-rows", "10000"])
    return plan_row("local", figures, small)


def bench_plan_s3(count: int) -> list[str]:
    for server in s3_server():
        quarter = s3_files(server, "small", count // 4)
        whole = s3_files(server, "many", count)
        small = run_child(["_plan", quarter, "--endpoint", server.endpoint, "--chunk-rows", "10000"])
        server.counting.reset()
        figures = run_child(["_plan", whole, "--endpoint", server.endpoint, "--chunk-rows", "10000"])
        requests = dict(server.counting.requests)
        most = server.counting.most
        shown = ", ".join(f"{n:,} {m}" for m, n in sorted(requests.items()))
        return plan_row("S3 (moto)", figures, small, f"{shown}; {most} at once")
    raise AssertionError("unreachable")


# -- (b) a huge CSV planned without reading it ------------------------------------------------------------


def sparse_csv(path: Path, size: int) -> None:
    """A header and 8 MiB of valid lines, then a hole up to ``size`` bytes."""
    rng = np.random.default_rng(0)
    lines = ["id," + ",".join(f"f{i}" for i in range(8))]
    values = rng.normal(size=(8, 8)).round(6)
    row = 0
    text_size = 0
    while text_size < 8 * MIB:
        line = f"{row}," + ",".join(str(v) for v in values[row % 8])
        lines.append(line)
        text_size += len(line) + 1
        row += 1
    with path.open("wb") as handle:
        handle.write(("\n".join(lines) + "\n").encode())
        handle.truncate(size)


def bench_csv(gigabytes: float) -> list[str]:
    size = int(gigabytes * 1e9)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "huge.csv"
        sparse_csv(path, size)
        figures = run_child(["_plan", str(path), "--twice"])
    first = figures["first_bytes_read"] / MIB
    return [f"{size / 1e9:.0f} GB CSV", f"{figures['seconds']:.2f}",
            f"{figures['bytes_read'] / MIB:.2f} MiB (first plan, imports included: {first:.2f} MiB)",
            f"{figures['bytes_read'] / size:.2e}", f"{figures['chunks']:,}", f"{figures['est_rows']:,}",
            f"{figures['peak_mib']:.0f}"]


# -- (c) a million chunks through the store ---------------------------------------------------------------


def bench_chunks(count: int) -> list[str]:
    from squall.io.output import Committed
    from squall.plan.chunk import Chunk, Piece
    from squall.runtime.task import InvocationReport
    from squall.states import Outcome
    from squall.store import JobStore

    with tempfile.TemporaryDirectory() as tmp:
        store = JobStore(Path(tmp))
        chunks = (Chunk("scale", i, "parquet", (Piece(f"s3://bucket/in/f-{i // 1000:05d}.parquet", "rowgroups",
                                                      i % 1000, i % 1000 + 1, row_count=1),), 1, 64)
                  for i in range(count))
        started = time.perf_counter()
        store.create_job("scale", "{}", "{}", "/out", chunks)
        enqueue_s = time.perf_counter() - started
        started = time.perf_counter()
        for n in range(count):
            claim = store.claim("scale", worker=n % 2)
            assert claim is not None
            part = f"/out/part-{claim.chunk.chunk_id:07d}.parquet"
            report = InvocationReport("scale", claim.chunk.chunk_id, claim.attempt, n % 2, Outcome.OK, 1, 1, 0, part)
            store.complete(report, Committed(part, 1), None)
        cycle_s = time.perf_counter() - started
        done = store.counts("scale").count("done")
        store.close()
        size = sum(f.stat().st_size for f in Path(tmp).rglob("*") if f.is_file())
    assert done == count
    return [f"{count:,}", f"{enqueue_s:.1f}", f"{enqueue_s / count * 1e6:.0f} µs",
            f"{cycle_s / count * 1e6:.0f} µs", f"{count / cycle_s:,.0f}", f"{size / MIB:,.0f} MiB",
            f"{size / count:,.0f} B"]


# -- (d) S3 read throughput -------------------------------------------------------------------------------


def upload_inputs(server: Server, rows: int) -> tuple[str, str, int, int]:
    rng = np.random.default_rng(1)
    table = pa.table({"id": np.arange(rows, dtype=np.int64),
                      **{f"f{i}": rng.normal(size=rows).astype(np.float32) for i in range(32)}})
    fs = s3fs_filesystem(server.endpoint)
    if not fs.exists(BUCKET):
        fs.mkdir(BUCKET)
    parquet, csv = io.BytesIO(), io.BytesIO()
    pq.write_table(table, parquet, row_group_size=65_536)
    pacsv.write_csv(table, csv)
    fs.pipe_file(f"{BUCKET}/read/input.parquet", parquet.getvalue())
    fs.pipe_file(f"{BUCKET}/read/input.csv", csv.getvalue())
    return (f"s3://{BUCKET}/read/input.parquet", f"s3://{BUCKET}/read/input.csv",
            len(parquet.getvalue()), len(csv.getvalue()))


def squall_reader(uri: str, endpoint: str, chunk_rows: int | None = None) -> Callable[[], int]:
    from squall.formats.registry import get_format
    from squall.io import storage
    from squall.plan.chunk import Piece
    from squall.plan.planner import make_plan
    from squall.spec import JobSpec

    spec = JobSpec(model="m.joblib", input=[uri], output="/tmp/unused-out", key=["id"], workers=2, endpoint_url=endpoint,
                   chunk_rows=chunk_rows)
    storage.configure(storage.connection_options({}, endpoint), [uri])
    plan = make_plan(spec, "read")
    fmt = get_format(plan.format)
    pieces = [piece for chunk in plan.chunks for piece in chunk.pieces]

    def read_piece(piece: Piece) -> int:
        return sum(batch.num_rows for batch in fmt.read(piece, plan.read_options, 65_536, []))

    def read() -> int:
        with ThreadPoolExecutor(spec.workers) as pool:  # as the job's two workers would, one piece each at a time
            return sum(pool.map(read_piece, pieces))

    return read


def pyarrow_reader(uri: str, endpoint: str) -> Callable[[], int]:
    from pyarrow import fs as pafs

    host = endpoint.removeprefix("http://")
    filesystem = pafs.S3FileSystem(access_key=CREDENTIALS["AWS_ACCESS_KEY_ID"], secret_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                                   endpoint_override=host, scheme="http", region="us-east-1",
                                   connect_timeout=30, request_timeout=300)  # moto under load is slow to start a body
    path = uri.removeprefix("s3://")
    if uri.endswith(".parquet"):
        return lambda: pq.read_table(path, filesystem=filesystem).num_rows
    return lambda: _read_csv(filesystem.open_input_stream(path))


def s3fs_reader(uri: str, endpoint: str) -> Callable[[], int]:
    fs = s3fs_filesystem(endpoint)
    if uri.endswith(".parquet"):
        return lambda: pq.read_table(uri, filesystem=fs).num_rows
    return lambda: _read_csv(fs.open(uri, "rb"))


def _read_csv(handle: Any) -> int:
    with handle:
        return pacsv.read_csv(handle).num_rows


def bench_s3_read(rows: int, runs: int) -> Iterator[list[list[str]]]:
    """For the Parquet file, then the CSV: each reader's row of the table."""
    for server in s3_server():
        parquet, csv, parquet_size, csv_size = upload_inputs(server, rows)
        for uri, size in ((parquet, parquet_size), (csv, csv_size)):
            readers = {"squall": squall_reader(uri, server.endpoint),
                       "squall, 1 chunk": squall_reader(uri, server.endpoint, chunk_rows=rows),
                       "pyarrow": pyarrow_reader(uri, server.endpoint), "s3fs": s3fs_reader(uri, server.endpoint)}
            times: dict[str, list[float]] = {name: [] for name in readers}
            served: dict[str, tuple[int, float]] = {}
            for name, read in readers.items():  # warm-up, counting what the server did for each
                server.counting.reset()
                assert read() == rows, name
                served[name] = (sum(server.counting.requests.values()), server.counting.busy_s)
            for run in range(runs):
                order = list(readers)[run % len(readers):] + list(readers)[: run % len(readers)]
                for name in order:
                    started = time.perf_counter()
                    assert readers[name]() == rows, name
                    times[name].append(time.perf_counter() - started)
            median = {name: statistics.median(t) for name, t in times.items()}
            fmt = "Parquet" if uri.endswith(".parquet") else "CSV"
            table: list[list[str]] = []
            for name in readers:
                ratio = {other: median[other] / median[name] for other in ("pyarrow", "s3fs")}
                table.append([fmt, f"{size / MIB:.0f} MiB", name, f"{median[name]:.2f}",
                              f"{min(times[name]):.2f}–{max(times[name]):.2f}", f"{size / 1e6 / median[name]:.0f}",
                              f"{served[name][0]}", f"{served[name][1]:.2f}",
                              "" if not name.startswith("squall") else
                              " / ".join(f"{ratio[o]:.2f}x {o} {'PASS' if ratio[o] >= READ_TARGET else 'MISS'}"
                                         for o in ratio)])
            yield table


# -- the driver -------------------------------------------------------------------------------------------


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_plan":
        child = argparse.ArgumentParser()
        child.add_argument("_plan")
        child.add_argument("pattern")
        child.add_argument("--endpoint")
        child.add_argument("--chunk-rows", type=int)
        child.add_argument("--twice", action="store_true")
        args = child.parse_args()
        child_plan(args.pattern, args.endpoint, args.chunk_rows, args.twice)
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="the issue's sizes (100,000 files, 20 GB, 1M chunks)")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    parser.add_argument("--files", type=int, help="small files to plan, locally (default 20,000; --full 100,000)")
    parser.add_argument("--s3-files", type=int, help="small objects to plan on S3 (default 4,000; --full 100,000)")
    parser.add_argument("--csv-gb", type=float, help="size of the CSV in GB (default 20)")
    parser.add_argument("--chunks", type=int, help="chunks through the store (default 100,000; --full 1,000,000)")
    parser.add_argument("--read-rows", type=int, help="rows of the S3 read files (default 200,000; --full 2,000,000)")
    parser.add_argument("--runs", type=int, default=5, help="interleaved runs per reader (default 5)")
    args = parser.parse_args()
    full = args.full
    parts = args.parts.split(",")
    plan_header = ["input", "files", "seconds", "CPU s", "listing s", "files/s", "peak MiB", "growth/file", "descriptors/file", "chunks",
                   "requests"]
    plans = []
    if "plan-local" in parts:
        plans.append(bench_plan_local(args.files or (100_000 if full else 20_000)))
    if "plan-s3" in parts:
        plans.append(bench_plan_s3(args.s3_files or (100_000 if full else 4_000)))
    if plans:
        print("\n## Planning many small Parquet files\n\n" + markdown(plan_header, plans), flush=True)
    if "csv" in parts:
        header = ["file", "seconds", "bytes read", "read/size", "chunks", "est. rows", "peak MiB"]
        print("\n## A huge CSV, planned\n\n" + markdown(header, [bench_csv(args.csv_gb or 20)]), flush=True)
    if "chunks" in parts:
        header = ["chunks", "enqueue s", "enqueue/chunk", "claim+complete/chunk", "chunks/s", "store on disk",
                  "store/chunk"]
        print("\n## Chunks through the job store\n\n" + markdown(header, [bench_chunks(
            args.chunks or (1_000_000 if full else 100_000))]), flush=True)
    if "s3-read" in parts:
        header = ["file", "size", "reader", "median s", "spread s", "MB/s", "requests", "server s", "squall vs"]
        rows = args.read_rows or (2_000_000 if full else 200_000)
        print(f"\n## S3 read throughput ({rows:,} rows × 32 float32, median of {args.runs} interleaved runs)", flush=True)
        for table in bench_s3_read(rows, args.runs):
            print("\n" + markdown(header, table), flush=True)


if __name__ == "__main__":
    main()
