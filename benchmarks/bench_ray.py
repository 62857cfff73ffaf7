"""Ray benchmark: squall on Ray and squall's local backend, beside Ray Data, in the same run on the same data.

Workloads (as in ``bench_sklearn.py`` and ``bench_text.py``):

* ``gbdt``: HistGradientBoostingClassifier (100 trees) ``predict_proba`` over
  ``--rows`` rows × 32 float32 features in one Parquet file of 31 row groups;
* ``text``: all-MiniLM-L6-v2 embeddings of ``--text-rows`` sentences.

Systems, each a fresh process tree, measured from before the process starts
until it exits (wall) with the peak RSS of the whole tree (Ray's daemons and
workers included):

* Ray Data: ``ray.init`` → ``read_parquet`` → ``map_batches`` with a callable
  class on an actor pool of 2 (``ActorPoolStrategy(size=2)``, one CPU each)
  → ``write_parquet``;
* squall on Ray: ``ray.init`` → ``squall.run(backend="ray", workers=2)``,
  which joins that Ray;
* squall local: ``squall run --workers 2`` from the CLI.

Both Ray drivers start the same local Ray (``ray.init(num_cpus=4)``: twice
the cores, because with as many logical CPUs as cores the two actors hold
every CPU and Ray Data's read tasks never run) and report the seconds spent
in ``ray.init``, so rows/s is printed with and without cluster start-up.
Every output's row count is checked. Targets: squall on Ray >= 1.2x Ray
Data's rows/s; squall local >= 2x Ray Data end to end.

    python benchmarks/bench_ray.py [--workloads gbdt,text] [--rows 2000000] [--text-rows 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import data
from bench_sklearn import SQUALL, count_output_rows
from bench_text import make_sentences, model_path
from measure import Measurement, run_measured

RAY_CPUS = 4
DRIVER = "_driver"
TARGET_RAY, TARGET_LOCAL = 1.2, 2.0
# Ray workers unpickle the predictor classes, which import `data` from this folder.
ENV = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(Path(__file__).resolve().parent)}


@dataclass(frozen=True)
class Run:
    system: str
    rows: int
    m: Measurement
    startup_s: float  # seconds before any work could start (ray.init); 0 where there is no cluster

    def rate(self, with_startup: bool = True) -> float:
        return self.rows / (self.m.wall_s if with_startup else self.m.wall_s - self.startup_s)


# --- what runs inside the measured driver processes --------------------------------------------


class GbdtPredictor:
    """Ray Data's callable class for the GBDT workload."""

    def __init__(self, model: str) -> None:
        import joblib

        self.model = joblib.load(model)

    def __call__(self, batch):  # type: ignore[no-untyped-def]
        import pandas as pd

        proba = self.model.predict_proba(batch[data.FEATURES])
        return pd.DataFrame({"id": batch["id"], "prediction_0": proba[:, 0], "prediction_1": proba[:, 1]})


class TextEmbedder:
    """Ray Data's callable class for the text workload."""

    def __init__(self, model: str) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(1)
        self.model = SentenceTransformer(model, device="cpu")

    def __call__(self, batch):  # type: ignore[no-untyped-def]
        embeddings = self.model.encode(list(batch["text"]), batch_size=64, show_progress_bar=False)
        return {"id": batch["id"], "embedding": embeddings}


def drive(system: str, workload: str, model: str, input: str, output: str, state: str) -> None:
    """Body of a measured driver: start Ray, run one system on it, print the seconds ``ray.init`` took."""
    import logging

    import ray

    started = time.perf_counter()
    ray.init(num_cpus=RAY_CPUS, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    startup_s = time.perf_counter() - started
    if system == "ray-data":
        predictor, batch_format = (GbdtPredictor, "pandas") if workload == "gbdt" else (TextEmbedder, "numpy")
        dataset = ray.data.read_parquet(input)
        mapped = dataset.map_batches(
            predictor, fn_constructor_args=(model,), compute=ray.data.ActorPoolStrategy(size=2), num_cpus=1,
            batch_format=batch_format, batch_size=4096 if workload == "gbdt" else 256,
        )
        mapped.write_parquet(output)
    else:
        import squall

        features = {"features": ["text"], "prediction_column": "embedding"} if workload == "text" else {"method": "predict_proba"}
        spec = squall.JobSpec(
            model=model, input=[input], output=output, key=["id"], workers=2, backend="ray", state_dir=state, **features,
        )
        result = squall.run(spec)
        if result.state != "SUCCEEDED":
            raise SystemExit(f"squall on Ray ended {result.state}")
    print(json.dumps({"startup_s": startup_s}))
    ray.shutdown()


# --- the benchmark -----------------------------------------------------------------------------


def run_driver(system: str, workload: str, model: Path, input: Path, output: Path, state: Path) -> tuple[Measurement, float]:
    cmd = [sys.executable, str(Path(__file__).resolve()), DRIVER, system, workload, str(model), str(input), str(output), str(state)]
    m = run_measured(cmd, env=ENV)
    if m.returncode != 0:
        raise SystemExit(f"{system} on {workload} failed (exit {m.returncode}):\n{m.stderr[-3000:]}")
    startup = json.loads(m.stdout.strip().splitlines()[-1])["startup_s"]
    return m, float(startup)


def run_local(workload: str, model: Path, input: Path, output: Path, state: Path) -> Measurement:
    fields = ["--features", "text", "--prediction-column", "embedding"] if workload == "text" else ["--method", "predict_proba"]
    m = run_measured([
        str(SQUALL), "run", "--model", str(model), "--input", str(input), "--output", str(output), "--key", "id",
        "--workers", "2", "--state-dir", str(state), "--quiet", *fields,
    ], env=ENV)
    if m.returncode != 0:
        raise SystemExit(f"squall local on {workload} failed (exit {m.returncode}):\n{m.stderr[-3000:]}")
    return m


def bench(workload: str, model: Path, input: Path, rows: int, work: Path) -> list[Run]:
    runs = []
    for system in ("ray-data", "squall-ray"):
        m, startup = run_driver(system, workload, model, input, work / system, work / f"state-{system}")
        runs.append(Run({"ray-data": "Ray Data", "squall-ray": "squall on Ray"}[system], rows, m, startup))
    runs.append(Run("squall local", rows, run_local(workload, model, input, work / "local", work / "state-local"), 0.0))
    for run, folder in zip(runs, ("ray-data", "squall-ray", "local")):
        written = count_output_rows(work / folder)
        if written != rows:
            raise SystemExit(f"{run.system} wrote {written} rows, expected {rows}")
    return runs


def report(workload: str, runs: list[Run]) -> None:
    ray_data, on_ray, local = runs
    print(f"\n{workload}: {ray_data.rows:,} rows; cpus: {os.cpu_count()}; Ray started with num_cpus={RAY_CPUS}")
    print(f"{'system':14} {'wall s':>8} {'start-up s':>10} {'rows/s':>10} {'rows/s w/o start-up':>20} {'peak MiB':>9}")
    for run in runs:
        print(f"{run.system:14} {run.m.wall_s:>8.2f} {run.startup_s:>10.2f} {run.rate():>10,.0f} "
              f"{run.rate(with_startup=False):>20,.0f} {run.m.peak_rss_mib:>9.0f}")
    with_start = on_ray.rate() / ray_data.rate()
    without = on_ray.rate(False) / ray_data.rate(False)
    end_to_end = local.rate() / ray_data.rate()
    print(f"target: squall on Ray >= {TARGET_RAY}x Ray Data's rows/s: {with_start:.2f}x with start-up, {without:.2f}x without "
          f"{'PASS' if min(with_start, without) >= TARGET_RAY else 'MISS'}")
    print(f"target: squall local >= {TARGET_LOCAL}x Ray Data end to end: {end_to_end:.2f}x "
          f"{'PASS' if end_to_end >= TARGET_LOCAL else 'MISS'}"
          + ("" if ray_data.m.wall_s < 60 else " (Ray Data took over a minute: the target is for jobs under one)"))


def main() -> None:
    if sys.argv[1:2] == [DRIVER]:
        drive(*sys.argv[2:8])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default="gbdt,text")
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--text-rows", type=int, default=20_000)
    parser.add_argument("--dir", type=Path, default=data.DEFAULT_DIR, help="data and model cache")
    args = parser.parse_args()
    for workload in [w for w in args.workloads.split(",") if w]:
        with tempfile.TemporaryDirectory(prefix=f"bench-ray-{workload}-") as tmp:
            work = Path(tmp)
            if workload == "gbdt":
                paths = data.prepare(args.dir, args.rows)
                model, input, rows = paths["gbdt"], paths["input"], args.rows
            elif workload == "text":
                model, rows = model_path(), args.text_rows
                input = make_sentences(work / "sentences.parquet", rows)
            else:
                parser.error(f"unknown workload {workload!r}: gbdt or text")
            report(workload, bench(workload, model, input, rows, work))


if __name__ == "__main__":
    main()
