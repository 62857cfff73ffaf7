"""Reading the benchmark table from S3 and from PostgreSQL, beside reading it from a local file.

The same job (LogisticRegression.predict_proba over the 2,000,000-row,
32-feature table of ``data.py``, 2 workers) runs with its input in four
places: a local Parquet file, the same file on an S3-compatible server on
loopback (moto's server mode, started here), and the same rows as a
PostgreSQL table (127.0.0.1:5432, database ``test``) read by ranges of
``id``. Outputs go to a local directory, except in the ``s3 -> s3`` run, so
that the figure is the input's. Each run is the ``squall`` command line,
timed from start to exit (start-up and model loading included), with its row
count checked. Prints rows/s and the ratio to the local file.

moto keeps objects in Python memory and serves them from one Python
process: a real object store is faster and farther away. The figure shows
what squall's reader costs (ranged GETs, no whole-object download), not
what a cloud bucket delivers.

    python benchmarks/bench_io.py [--rows 2000000] [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import fsspec
import pyarrow.parquet as pq
from moto.server import ThreadedMotoServer

import data
from measure import Measurement, run_measured

POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
BUCKET = "squall-bench"
SQUALL = Path(sys.executable).parent / "squall"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}


@dataclass(frozen=True)
class Source:
    name: str
    args: list[str]
    output: str


def upload(path: Path, endpoint: str) -> str:
    fs = fsspec.filesystem("s3", endpoint_url=endpoint)
    if not fs.exists(BUCKET):
        fs.mkdir(BUCKET)
    fs.put_file(str(path), f"{BUCKET}/input.parquet")
    return f"s3://{BUCKET}/input.parquet"


def load_postgres(path: Path, rows: int) -> str:
    """The table ``bench_input_<rows>`` with ``id`` as its primary key (kept between runs)."""
    import adbc_driver_postgresql.dbapi as pg

    table = f"bench_input_{rows}"
    with pg.connect(POSTGRES) as connection, connection.cursor() as cursor:
        cursor.execute(f"SELECT COUNT(*) FROM information_schema.tables WHERE table_name = '{table}'")
        if cursor.fetchone()[0]:
            cursor.execute(f"SELECT COUNT(*) FROM {table}")
            if cursor.fetchone()[0] == rows:
                return table
            cursor.execute(f"DROP TABLE {table}")
        parquet = pq.ParquetFile(path)
        for group in range(parquet.num_row_groups):
            cursor.adbc_ingest(table, parquet.read_row_group(group), mode="create_append")
        cursor.execute(f"ALTER TABLE {table} ADD PRIMARY KEY (id)")
        cursor.execute(f"ANALYZE {table}")
        connection.commit()
    return table


def squall(source: Source, model: Path, state_dir: Path, endpoint: str) -> Measurement:
    command = [str(SQUALL), "run", "--model", str(model), *source.args, "--output", source.output, "--key", "id",
               "--method", "predict_proba", "--workers", "2", "--overwrite", "--state-dir", str(state_dir), "--quiet",
               "--job-id", f"bench-{source.name.replace(' ', '').replace('>', '')}-{time.time_ns()}"]
    return run_measured(command, env={**CREDENTIALS, "AWS_ENDPOINT_URL": endpoint})


def rows_written(measured: Measurement) -> int:
    """Rows the job reports (its last line: ``SUCCEEDED N rows in S s``)."""
    last = measured.stdout.strip().splitlines()[-1].split()
    if measured.returncode != 0 or last[0] != "SUCCEEDED":
        raise SystemExit(f"the run failed: {measured.stdout}")
    return int(last[1])


def sources(local: Path, s3_uri: str, table: str, workdir: Path) -> list[Source]:
    return [
        Source("local file", ["--input", str(local)], str(workdir / "out-local")),
        Source("s3", ["--input", s3_uri], str(workdir / "out-s3")),
        Source("s3 -> s3", ["--input", s3_uri], f"s3://{BUCKET}/out"),
        Source("postgresql", ["--input", POSTGRES, "--query", f"SELECT * FROM {table}", "--partition-column", "id"],
               str(workdir / "out-pg")),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--dir", type=Path, default=data.DEFAULT_DIR, help="data and model cache")
    parser.add_argument("--repeat", type=int, default=1, help="best of N runs")
    args = parser.parse_args()
    paths = data.prepare(args.dir, args.rows)
    os.environ.update(CREDENTIALS)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        s3_uri = upload(paths["input"], endpoint)
        table = load_postgres(paths["input"], args.rows)
        with tempfile.TemporaryDirectory(prefix="squall-bench-io-") as work:
            results = {}
            for source in sources(paths["input"], s3_uri, table, Path(work)):
                runs = [squall(source, paths["linear"], Path(work) / "state", endpoint) for _ in range(args.repeat)]
                best = min(runs, key=lambda m: m.wall_s)
                rows = rows_written(best)
                if rows != args.rows:
                    raise SystemExit(f"{source.name}: wrote {rows} rows, expected {args.rows}")
                results[source.name] = (best.wall_s, rows / best.wall_s, best.peak_rss_mib)
    finally:
        server.stop()
    local_rate = results["local file"][1]
    print(f"{args.rows:,} rows x 32 float32 features, LogisticRegression.predict_proba, 2 workers")
    print(f"{'input':<12} {'wall s':>8} {'rows/s':>12} {'vs local':>9} {'peak MiB':>9}")
    for name, (wall, rate, rss) in results.items():
        print(f"{name:<12} {wall:>8.2f} {rate:>12,.0f} {rate / local_rate:>8.2f}x {rss:>9.0f}")
    print(json.dumps({name: round(rate) for name, (_, rate, _) in results.items()}))


if __name__ == "__main__":
    main()
