"""The sqs backend (two ``squall worker`` processes) beside the local backend (two workers), input and output on S3.

Both jobs run the benchmark GBDT (``data.py``: HistGradientBoostingClassifier,
100 trees) over the same Parquet table on an S3-compatible server on loopback
(moto's server mode, started in this process), writing to S3, interleaved,
``--repeat`` times each; the figures are medians. Each run is the ``squall
run`` command line, timed from start to exit. The two ``squall worker``
processes are started once, before the runs, and stay warm between them (as
warm Lambda environments would); the local backend starts its workers in
each run, which its wall time includes.

The per-message overhead is measured with a model that does nothing
(``noop_model:predict``) over ``--messages`` one-row chunks: messages (chunks)
per second, SQS beside local.

moto serves S3 and SQS from this one Python process, on the same cores as
everything else: its CPU seconds during each run (this process's, which does
nothing else meanwhile) are printed beside the workers' and the
coordinator's, so the part of the time that is moto's is stated, not guessed.

Every run's output is compared with the model's own call, value by value
(``compare_verify``: each ``id`` exactly once, probabilities within float32
rounding; the no-op model's zeros likewise), before its time counts.

    python benchmarks/bench_sqs.py [--rows 2000000] [--messages 2000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import boto3
import numpy as np
import fsspec
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
from moto.server import ThreadedMotoServer

import compare_verify
import data

BUCKET = "squall-bench-sqs"
QUEUE = "bench"
SQUALL = Path(sys.executable).parent / "squall"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Run:
    """One timed job: wall seconds, and CPU seconds of moto (this process), the coordinator and the sqs workers."""

    wall_s: float
    moto_cpu_s: float
    coordinator_cpu_s: float
    workers_cpu_s: float


def cpu_s(process: psutil.Process) -> float:
    """CPU seconds of ``process`` and its live children so far."""
    total = 0.0
    for proc in [process, *process.children(recursive=True)]:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            continue
    return total


def own_cpu_s(process: psutil.Process) -> float:
    """CPU seconds of ``process`` alone (here: moto's server threads, all this process runs meanwhile)."""
    times = process.cpu_times()
    return times.user + times.system


def timed_job(args: list[str], workers: list[psutil.Process], env: dict[str, str]) -> Run:
    """Run ``squall run ARGS`` to completion; CPU of the coordinator counts its children (the local workers)."""
    me = psutil.Process()
    moto_before, workers_before = own_cpu_s(me), sum(cpu_s(w) for w in workers)
    started = time.perf_counter()
    process = subprocess.Popen([str(SQUALL), "run", *args, "--quiet"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watched = psutil.Process(process.pid)
    coordinator = 0.0
    while process.poll() is None:
        coordinator = max(coordinator, cpu_s(watched))
        time.sleep(0.05)
    wall = time.perf_counter() - started
    out, err = process.communicate()
    if process.returncode != 0 or "SUCCEEDED" not in out:
        raise SystemExit(f"squall run {' '.join(args)} failed:\n{out}\n{err}")
    return Run(wall, own_cpu_s(me) - moto_before, coordinator, sum(cpu_s(w) for w in workers) - workers_before)


def make_queues(endpoint: str) -> None:
    client = boto3.client("sqs", endpoint_url=endpoint)
    dlq = client.create_queue(QueueName=f"{QUEUE}-dlq")["QueueUrl"]
    arn = client.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    redrive = json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": "3"})
    client.create_queue(QueueName=QUEUE, Attributes={"RedrivePolicy": redrive, "VisibilityTimeout": "120"})
    client.create_queue(QueueName=f"{QUEUE}-results")


def one_row_chunks(messages: int) -> bytes:
    """A Parquet table of ``messages`` rows, one row group each: one chunk (one message) per row."""
    buffer = io.BytesIO()
    ids = pa.array(range(messages), pa.int64())
    pq.write_table(pa.table({"id": ids, "x": ids}), buffer, row_group_size=1)
    return buffer.getvalue()


def check(output: str, kind: str, want: np.ndarray) -> None:
    """Stop the benchmark unless ``output`` holds the model's own outputs, each row once."""
    verdict = compare_verify.verify(kind, output, want)
    if not verdict.ok:
        raise SystemExit(f"{output} does not hold the model's outputs: {verdict.problem}")


def job_args(backend: str, model: str, input: str, output: str, extra: list[str]) -> list[str]:
    chosen = ["--backend", "sqs", "--queue", QUEUE] if backend == "sqs" else ["--backend", "local"]
    return [*chosen, "--model", model, "--input", input, "--output", output, "--key", "id", "--workers", "2",
            "--overwrite", "--timeout", "600", *extra]


def measure(label: str, runs: dict[str, list[Run]], units: float, unit: str) -> dict[str, float]:
    rates = {}
    print(f"\n{label}")
    print(f"{'backend':<8} {'wall s':>8} {unit + '/s':>14} {'moto cpu s':>11} {'coordinator cpu s':>18} {'sqs workers cpu s':>18}")
    for backend, done in runs.items():
        wall = statistics.median(r.wall_s for r in done)
        rates[backend] = units / wall
        print(f"{backend:<8} {wall:>8.2f} {units / wall:>14,.1f} {statistics.median(r.moto_cpu_s for r in done):>11.2f} "
              f"{statistics.median(r.coordinator_cpu_s for r in done):>18.2f} {statistics.median(r.workers_cpu_s for r in done):>18.2f}")
    print(f"sqs / local: {rates['sqs'] / rates['local']:.2f}x")
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--messages", type=int, default=2_000, help="one-row chunks of the no-op model")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each backend, interleaved; medians")
    parser.add_argument("--dir", type=Path, default=data.DEFAULT_DIR, help="data and model cache")
    args = parser.parse_args()
    paths = data.prepare(args.dir, args.rows)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    os.environ.update({**CREDENTIALS, "AWS_ENDPOINT_URL": endpoint})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])),
           "SQUALL_HOME": str(args.dir / "state-sqs")}
    fs = fsspec.filesystem("s3", endpoint_url=endpoint)
    fs.mkdir(BUCKET)
    fs.put_file(str(paths["input"]), f"{BUCKET}/in/input.parquet")
    fs.put_file(str(paths["gbdt"]), f"{BUCKET}/model/gbdt.joblib")
    fs.pipe_file(f"{BUCKET}/ones/ones.parquet", one_row_chunks(args.messages))
    make_queues(endpoint)
    logs = [open(args.dir / f"sqs-worker-{index}.log", "wb") for index in range(2)]  # noqa: SIM115 (open while they run)
    workers = [subprocess.Popen([str(SQUALL), "worker", "--queue", QUEUE, "--wait-s", "1"], env=env, stdout=log,
                                stderr=subprocess.STDOUT) for log in logs]
    try:
        watched = [psutil.Process(w.pid) for w in workers]
        gbdt = {"local": [], "sqs": []}
        noop = {"local": [], "sqs": []}
        model = f"s3://{BUCKET}/model/gbdt.joblib"
        want = compare_verify.expected("sklearn", paths["gbdt"], paths["input"], args.dir / f"expected-gbdt-{args.rows}.npy")
        zeros = np.zeros((args.messages, 1))
        for index in range(args.repeat):
            for backend in ("local", "sqs"):
                gbdt[backend].append(timed_job(job_args(backend, model, f"s3://{BUCKET}/in/input.parquet",
                                                        f"s3://{BUCKET}/out-{backend}", ["--trust-model", "--method", "predict_proba"]),
                                               watched, env))
                check(f"s3://{BUCKET}/out-{backend}", "sklearn", want)
                noop[backend].append(timed_job(job_args(backend, "noop_model:predict", f"s3://{BUCKET}/ones/ones.parquet",
                                                        f"s3://{BUCKET}/noop-{backend}", ["--features", "x", "--chunk-rows", "1"]),
                                               watched, env))
                check(f"s3://{BUCKET}/noop-{backend}", "sklearn", zeros)
        print(f"GBDT (100 trees) over {args.rows:,} rows x 32 features, S3 in and out on moto, 2 workers each, "
              f"{args.repeat} interleaved runs, medians; every output equal to the model's own call")
        rates = measure("GBDT", gbdt, args.rows, "rows")
        messages = measure(f"no-op model, {args.messages:,} one-row chunks (per-message overhead)", noop, args.messages, "msgs")
        print(json.dumps({"gbdt_rows_per_s": {k: round(v) for k, v in rates.items()},
                          "noop_messages_per_s": {k: round(v, 1) for k, v in messages.items()}}))
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(timeout=60)
        for log in logs:
            log.close()
        server.stop()


if __name__ == "__main__":
    main()
