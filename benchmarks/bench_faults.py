"""The cost of fault tolerance: the GBDT benchmark with no faults, and with a worker SIGKILLed every 2 s.

Fault tolerance is always on in squall (leases, attempt files, commits), so
the no-fault run *is* the core engine's figure; the second run shows what
losing a worker every two seconds costs: the invocation in flight is redone
and a warm worker is forked in its place. Target: within 25 % of the
no-fault rows/s. Both runs must write every row exactly once.

    python benchmarks/bench_faults.py [--rows 2000000] [--kill-every 2.0] [--workload gbdt]
"""

from __future__ import annotations

import argparse
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pyarrow.dataset as ds

import data
from bench_sklearn import squall_cmd

TARGET = 0.75


def worker_pids(root: int) -> list[int]:
    """squall's workers under ``root``: children of its fork server, or spawned worker processes."""
    found = []
    try:
        for process in psutil.Process(root).children(recursive=True):
            command = " ".join(process.cmdline())
            parent = process.parent()
            if "squall.backends.local.worker" in command or (parent and "squall.backends.local.zygote" in " ".join(parent.cmdline())):
                found.append(process.pid)
    except psutil.Error:
        pass
    return found


def run(cmd: list[str], kill_every: float | None) -> tuple[float, int]:
    """Wall seconds of ``cmd`` and how many workers were killed while it ran."""
    started = time.perf_counter()
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    kills, stop = [0], threading.Event()

    def killer() -> None:
        rng = random.Random(0)
        while not stop.wait(kill_every):
            pids = worker_pids(process.pid)
            if pids:
                try:
                    psutil.Process(rng.choice(pids)).send_signal(signal.SIGKILL)
                    kills[0] += 1
                except psutil.Error:
                    pass

    thread = threading.Thread(target=killer, daemon=True) if kill_every else None
    if thread:
        thread.start()
    code = process.wait()
    stop.set()
    if code != 0:
        sys.exit(f"squall exited with {code}")
    return time.perf_counter() - started, kills[0]


def output_rows(output: Path) -> tuple[int, int]:
    """Rows in the committed parts, and distinct ids among them."""
    table = ds.dataset(output, format="parquet", exclude_invalid_files=True, ignore_prefixes=["_", "."]).to_table(columns=["id"])
    return table.num_rows, len(set(table.column("id").to_pylist()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--kill-every", type=float, default=2.0)
    parser.add_argument("--workload", choices=["gbdt", "linear"], default="gbdt")
    parser.add_argument("--dir", type=Path, default=Path(__file__).parent / ".data")
    args = parser.parse_args()
    paths = data.prepare(args.dir, args.rows)
    with tempfile.TemporaryDirectory() as tmp:
        figures = {}
        for label, kill_every in (("no faults", None), (f"kill every {args.kill_every:g} s", args.kill_every)):
            output = Path(tmp) / label.replace(" ", "-")
            wall, kills = run(squall_cmd(paths[args.workload], paths["input"], output, Path(tmp) / "state"), kill_every)
            rows, distinct = output_rows(output)
            assert rows == distinct == args.rows, f"{label}: {rows} rows, {distinct} distinct, expected {args.rows}"
            figures[label] = (wall, kills)
            print(f"{label:<18} {wall:7.2f} s  {args.rows / wall:>10,.0f} rows/s  {kills:3d} workers killed  rows exact")
    (base, _), (faulty, _) = figures.values()
    ratio = base / faulty
    print(f"with faults: {ratio:.2f}x the no-fault rows/s; target >= {TARGET:.2f}x: {'PASS' if ratio >= TARGET else 'MISS'}")


if __name__ == "__main__":
    main()
