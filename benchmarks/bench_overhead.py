"""The overhead floor: what squall costs when the job is tiny or its chunks are many.

Three figures, each beside a plain loop doing the same work by hand:

* a 1-row job as a whole process (``squall run``, start-up and teardown
  included), median of ``--runs``; target ≤ 0.8 s. The plain loop is one
  ``python`` process that reads the row with pyarrow, calls the model and
  writes a Parquet file;
* the same 1-row job submitted over HTTP to a running ``squall serve`` whose
  warm pool holds the model: from the POST until ``GET /jobs/ID`` says it is
  final (polled every 2 ms), median of ``--runs``; target ≤ 0.2 s;
* ``--chunks`` one-row chunks (a CSV file of fixed-width lines, ``chunk_rows
  = 1``) with a model that returns zeros on 2 workers: invocations per second
  over the job's own wall time (from its manifest) and as a whole process,
  and the files the output holds; targets ≥ 2,000 invocations/s and a handful
  of files (``min_part_bytes`` 64 KiB merges the small parts at finalize). The
  plain loop reads each line, calls the model and writes one Parquet file per
  chunk, in one process.

Each figure also says the CPU seconds of the whole process tree: on a machine
shared with other work, wall times measure the neighbours as much as squall.

Runs are interleaved (squall, plain loop, squall, ...) after one warm-up of each.

    python benchmarks/bench_overhead.py [--runs 5] [--chunks 5000] [--skip-http]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil

ONE_ROW_TARGET_S = 0.8
HTTP_TARGET_S = 0.2
INVOCATIONS_TARGET = 2_000
POLL_S = 0.002
MIN_PART_BYTES = 64 * 1024

NOOP_MODEL = textwrap.dedent(
    """
    import numpy as np

    def zeros(frame):
        return np.zeros(len(frame))
    """
)

PLAIN_ONE_ROW = textwrap.dedent(
    """
    import sys
    import pyarrow as pa, pyarrow.parquet as pq
    from noop_model import zeros
    table = pq.read_table(sys.argv[1])
    out = table.append_column("prediction", pa.array(zeros(table.to_pandas())))
    pq.write_table(out, sys.argv[2])
    """
)

PLAIN_CHUNKS = textwrap.dedent(
    """
    import io, os, sys, time
    import pyarrow as pa, pyarrow.csv as pacsv, pyarrow.parquet as pq
    from noop_model import zeros
    source, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    started = time.perf_counter()
    with open(source, "rb") as handle:
        header = handle.readline()
        for index, line in enumerate(handle):
            table = pacsv.read_csv(io.BytesIO(header + line))
            table = table.append_column("prediction", pa.array(zeros(table.to_pandas())))
            pq.write_table(table, f"{out}/part-{index:06d}.parquet")
    print(time.perf_counter() - started)
    """
)


def squall_command() -> list[str]:
    script = Path(sys.executable).parent / "squall"
    return [str(script)] if script.exists() else [sys.executable, "-m", "squall.cli"]


def environment(work: Path) -> dict[str, str]:
    """This environment, with the work folder importable (the model module lives there); the commands run in
    the work folder, so a relative ``PYTHONPATH`` entry (``src``) is made absolute."""
    given = [os.path.abspath(entry) for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry]
    path = [str(work), *given]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path)}


def prepare(work: Path, chunks: int) -> None:
    """The model module, a 1-row Parquet file, and a CSV file of ``chunks`` fixed-width lines."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (work / "noop_model.py").write_text(NOOP_MODEL)
    (work / "plain_one_row.py").write_text(PLAIN_ONE_ROW)
    (work / "plain_chunks.py").write_text(PLAIN_CHUNKS)
    pq.write_table(pa.table({"id": [0], "x": [0.5]}), work / "one.parquet")
    with open(work / "rows.csv", "w") as handle:
        handle.write("id,x\n")
        handle.writelines(f"{i:08d},{i % 1000:08.3f}\n" for i in range(chunks))


def timed(command: list[str], work: Path) -> float:
    return timed_with_cpu(command, work)[0]


def timed_with_cpu(command: list[str], work: Path) -> tuple[float, float]:
    """Wall seconds of ``command`` and the CPU seconds (user + system) of its whole process tree, sampled every
    20 ms (a process's last few milliseconds before it exits can be missed). On a machine other work shares,
    the CPU seconds say what the command costs; the wall says what it took there."""
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=work, env=environment(work), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    used: dict[int, float] = {}
    while process.poll() is None:
        _sample_cpu(process.pid, used)
        time.sleep(0.02)
    stdout, stderr = process.communicate()
    wall = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode}):\n{stdout}\n{stderr}")
    return wall, sum(used.values())


def _sample_cpu(root: int, used: dict[int, float]) -> None:
    try:
        tree = [psutil.Process(root), *psutil.Process(root).children(recursive=True)]
    except psutil.Error:
        return
    for member in tree:
        try:
            times = member.cpu_times()
        except psutil.Error:
            continue
        used[member.pid] = max(used.get(member.pid, 0.0), times.user + times.system)


def one_row_job(work: Path, runs: int) -> dict[str, list[float]]:
    """Whole-process walls and tree CPU seconds of ``squall run`` on one row and of the plain loop, interleaved."""
    squall = [*squall_command(), "run", "-q", "--model", "noop_model:zeros", "--input", "one.parquet",
              "--state-dir", "state", "--overwrite", "--output"]
    plain = [sys.executable, "plain_one_row.py", "one.parquet"]
    found: dict[str, list[float]] = {"squall": [], "squall_cpu": [], "plain": [], "plain_cpu": []}
    for index in range(runs + 1):
        squall_wall, squall_cpu = timed_with_cpu([*squall, f"one-{index}"], work)
        plain_wall, plain_cpu = timed_with_cpu([*plain, f"plain-{index}.parquet"], work)
        if index:  # the first pair is the warm-up
            for name, value in (("squall", squall_wall), ("squall_cpu", squall_cpu), ("plain", plain_wall),
                                ("plain_cpu", plain_cpu)):
                found[name].append(value)
    return found


def http_job(work: Path, runs: int) -> list[float]:
    """Latency of a 1-row job posted to ``squall serve`` with a warm pool: POST until its state is final."""
    port = _free_port()
    (work / "serve.toml").write_text(f'state_dir = "{work / "serve-state"}"\n[warm_workers]\n"noop_model:zeros" = 1\n')
    server = subprocess.Popen([*squall_command(), "serve", "--port", str(port), "--config", "serve.toml"], cwd=work,
                              env=environment(work), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            _wait_for(lambda: _healthy(client), 60)
            latencies = [_post_and_wait(client, work, index) for index in range(runs + 1)]
    finally:
        server.terminate()
        server.wait(30)
    return latencies[1:]  # the first job is the warm-up (the pool may still be loading)


def _post_and_wait(client: httpx.Client, work: Path, index: int) -> float:
    spec = {"model": "noop_model:zeros", "input": [str(work / "one.parquet")], "output": str(work / f"http-{index}"),
            "workers": 1}
    started = time.perf_counter()
    job = client.post("/jobs", json=spec)
    job.raise_for_status()
    job_id = job.json()["id"]
    while True:
        state = client.get(f"/jobs/{job_id}").json()["state"]
        if state in ("SUCCEEDED", "PARTIAL", "FAILED", "CANCELLED"):
            latency = time.perf_counter() - started
            if state != "SUCCEEDED":
                raise SystemExit(f"HTTP job {job_id} ended {state}")
            return latency
        time.sleep(POLL_S)


def _healthy(client: httpx.Client) -> bool:
    try:
        return client.get("/healthz").status_code == 200
    except httpx.TransportError:
        return False


def _wait_for(condition: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit("squall serve did not answer in time")
        time.sleep(0.1)


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def many_chunks(work: Path, chunks: int, runs: int, min_part_bytes: int) -> list[dict[str, float]]:
    """``chunks`` one-row chunks on 2 workers, interleaved with the plain loop; one record per run."""
    results = []
    for index in range(runs):
        output = work / f"many-{index}"
        command = [*squall_command(), "run", "-q", "--model", "noop_model:zeros", "--input", "rows.csv",
                   "--chunk-rows", "1", "--workers", "2", "--state-dir", "state", "--output", str(output)]
        command += ["--min-part-bytes", str(min_part_bytes)] if min_part_bytes else []
        wall, cpu = timed_with_cpu(command, work)
        manifest = json.loads((output / "_manifest.json").read_text())
        assert manifest["rows"]["written"] == chunks, manifest["rows"]
        job_wall = float(manifest["timings"]["wall_s"])
        files = sum(1 for path in output.rglob("*") if path.is_file())
        plain = subprocess.run([sys.executable, "plain_chunks.py", "rows.csv", f"plain-many-{index}"], cwd=work,
                               env=environment(work), capture_output=True, text=True, check=True)
        results.append({"wall_s": wall, "cpu_s": cpu, "job_wall_s": job_wall, "files": files,
                        "invocations": len(manifest["parts"]) or chunks, "plain_s": float(plain.stdout)})
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--chunks", type=int, default=5_000)
    parser.add_argument("--chunk-runs", type=int, default=3)
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--skip-one-row", action="store_true")
    parser.add_argument("--min-part-bytes", type=int, default=MIN_PART_BYTES,
                        help="the many-chunks job's part size floor; 0 leaves the option out (a squall without it)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="squall-overhead-") as folder:
        work = Path(folder)
        prepare(work, args.chunks)
        one = {} if args.skip_one_row else one_row_job(work, args.runs)
        if one:
            print(f"1-row job, whole process: squall median {statistics.median(one['squall']):.3f} s "
                  f"(min {min(one['squall']):.3f}, max {max(one['squall']):.3f}; CPU of its process tree "
                  f"{statistics.median(one['squall_cpu']):.3f} s), plain loop {statistics.median(one['plain']):.3f} s "
                  f"(CPU {statistics.median(one['plain_cpu']):.3f} s); target <= {ONE_ROW_TARGET_S} s")
        if not args.skip_http:
            latencies = http_job(work, args.runs)
            print(f"1-row job over HTTP, warm pool: median {statistics.median(latencies):.3f} s "
                  f"(min {min(latencies):.3f}, max {max(latencies):.3f}); target <= {HTTP_TARGET_S} s")
        runs = many_chunks(work, args.chunks, args.chunk_runs, args.min_part_bytes)
        rate = statistics.median(run["invocations"] / run["job_wall_s"] for run in runs)
        whole = statistics.median(run["invocations"] / run["wall_s"] for run in runs)
        plain_rate = statistics.median(args.chunks / run["plain_s"] for run in runs)
        files = int(statistics.median(run["files"] for run in runs))
        cpu_ms = statistics.median(run["cpu_s"] / run["invocations"] * 1000 for run in runs)
        print(f"{args.chunks} one-row chunks, 2 workers, no-op model: {rate:,.0f} invocations/s over the job's wall "
              f"({whole:,.0f}/s whole process), {files} files in the output; plain 1-process loop {plain_rate:,.0f}/s "
              f"writing {args.chunks} files; target >= {INVOCATIONS_TARGET:,}/s")
        print(f"  CPU of the whole process tree: {cpu_ms:.2f} ms per invocation, so at most "
              f"{2000 / cpu_ms:,.0f} invocations/s on 2 idle cores")


if __name__ == "__main__":
    main()
