"""Core benchmark: squall against plain loops on scikit-learn models.

For each workload (``linear``: LogisticRegression.predict_proba, ``gbdt``:
HistGradientBoostingClassifier.predict_proba) on the same Parquet file it
measures wall seconds, rows/s and peak RSS and PSS of the process tree for

* the 1-process streaming loop (``baselines.one_process``),
* the 2-process loop over row-group halves (``baselines.two_processes``),
* ``squall run ... --workers 2`` through its CLI (``measure.run_measured``),

checks every output has as many rows as the input, and prints squall's
throughput relative to the 2-process loop against the targets (>= 0.9x for
gbdt, >= 0.8x for linear) as PASS/MISS. With ``--scale 4`` squall also runs on
a 4x larger file, to show its peak memory stays flat. ``--repeat N`` keeps
the fastest of N runs per system.

    python benchmarks/bench_sklearn.py [--rows 2000000] [--scale 4] \
        [--workloads linear,gbdt] [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pyarrow.dataset as ds
import pyarrow.parquet as pq

import baselines
import data
from measure import Measurement, run_measured

METHOD = "predict_proba"
TARGETS = {"linear": 0.8, "gbdt": 0.9}
SQUALL = Path(sys.executable).parent / "squall"


@dataclass(frozen=True)
class Result:
    system: str
    rows: int
    m: Measurement


def squall_installed() -> bool:
    return SQUALL.is_file() and os.access(SQUALL, os.X_OK)


def squall_cmd(model: Path, input: Path, output: Path, state_dir: Path) -> list[str]:
    return [
        str(SQUALL), "run", "--model", str(model), "--input", str(input),
        "--output", str(output), "--key", "id", "--method", METHOD,
        "--workers", "2", "--overwrite", "--state-dir", str(state_dir), "--quiet",
    ]


def run_squall(model: Path, input: Path, output: Path) -> Measurement:
    with tempfile.TemporaryDirectory(prefix="squall-state-") as state_dir:
        return run_measured(squall_cmd(model, input, output, Path(state_dir)))


def count_output_rows(output: Path) -> int:
    """Rows in a Parquet file, or in the Parquet files of a directory tree,
    skipping any file or directory whose name starts with ``_`` or ``.``."""
    if output.is_file():
        return pq.ParquetFile(output).metadata.num_rows
    files = [
        str(p) for p in sorted(output.rglob("*.parquet"))
        if p.is_file() and not any(part.startswith(("_", ".")) for part in p.relative_to(output).parts)
    ]
    return ds.dataset(files, format="parquet").count_rows() if files else 0


def best_of(repeat: int, run: Callable[[Path], Measurement], workdir: Path, name: str) -> Measurement:
    """Runs ``run(output)`` ``repeat`` times and keeps the fastest run."""
    runs = [run(workdir / f"{name}-{i}") for i in range(repeat)]
    return min(runs, key=lambda m: m.wall_s)


def checked(name: str, m: Measurement, output: Path, expected_rows: int) -> Measurement:
    """Raises unless the run exited 0 and wrote exactly ``expected_rows`` rows."""
    if m.returncode != 0:
        raise RuntimeError(f"{name} exited {m.returncode}:\n{m.stderr[-4000:]}")
    got = count_output_rows(output)
    if got != expected_rows:
        raise RuntimeError(f"{name}: output has {got} rows, input has {expected_rows}")
    return m


def measure_system(
    name: str, repeat: int, workdir: Path, rows: int, run: Callable[[Path], Measurement]
) -> Result:
    def run_and_check(output: Path) -> Measurement:
        return checked(name, run(output), output, rows)

    return Result(name, rows, best_of(repeat, run_and_check, workdir, name.replace(" ", "_")))


def bench_workload(workload: str, paths: dict[str, Path], args: argparse.Namespace, workdir: Path) -> list[Result]:
    model, input = paths[workload], paths["input"]
    rows = pq.ParquetFile(input).metadata.num_rows
    results = [
        measure_system("1-process loop", args.repeat, workdir, rows,
                       lambda out: baselines.one_process(model, input, out / "part-0.parquet", METHOD)),
        measure_system("2-process loop", args.repeat, workdir, rows,
                       lambda out: baselines.two_processes(model, input, out, METHOD)),
    ]
    if not squall_installed():
        return results
    runs = [("squall", input)]
    if "input_scaled" in paths:
        runs.append((f"squall ({args.scale}x rows)", paths["input_scaled"]))
    for name, source in runs:
        source_rows = pq.ParquetFile(source).metadata.num_rows
        try:
            results.append(measure_system(name, args.repeat, workdir, source_rows,
                                          lambda out, src=source: run_squall(model, src, out)))
        except RuntimeError as err:
            print(f"{workload}: {err}", flush=True)
            break
    return results


def _by_name(results: list[Result], name: str) -> Result | None:
    return next((r for r in results if r.system == name), None)


def print_table(workload: str, results: list[Result]) -> None:
    two = _by_name(results, "2-process loop")
    print(f"\n{workload}: {METHOD}")
    print(f"{'system':22} {'rows':>10} {'wall s':>8} {'rows/s':>12} {'RSS MiB':>9} {'PSS MiB':>9}  vs 2-process")
    for r in results:
        rate = r.rows / r.m.wall_s
        ratio = rate / (two.rows / two.m.wall_s) if two else float("nan")
        print(f"{r.system:22} {r.rows:>10,} {r.m.wall_s:>8.2f} {rate:>12,.0f} {r.m.peak_rss_mib:>9.0f} "
              f"{r.m.peak_pss_mib:>9.0f}  {ratio:.2f}x")
    print_verdict(workload, results)


def print_verdict(workload: str, results: list[Result]) -> None:
    two, squall = _by_name(results, "2-process loop"), _by_name(results, "squall")
    if squall is None:
        why = "failed (see above)" if squall_installed() else f"not installed ({SQUALL} not found)"
        print(f"squall: {why}; baseline figures only")
        return
    ratio = two.m.wall_s / squall.m.wall_s
    target = TARGETS[workload]
    verdict = "PASS" if ratio >= target else "MISS"
    print(f"target: squall >= {target:.1f}x the 2-process loop's rows/s: {ratio:.2f}x {verdict}")
    scaled = [r for r in results if r.system.startswith("squall (")]
    for r in scaled:
        rss, pss = r.m.peak_rss_mib / squall.m.peak_rss_mib, r.m.peak_pss_mib / squall.m.peak_pss_mib
        print(f"peak memory at {r.rows:,} rows vs {squall.rows:,}: RSS {rss:.2f}x, PSS {pss:.2f}x")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--dir", type=Path, default=data.DEFAULT_DIR, help="data and model cache")
    parser.add_argument("--scale", type=int, choices=(1, 4), default=1,
                        help="4: also run squall on a 4x file")
    parser.add_argument("--workloads", default="linear,gbdt")
    parser.add_argument("--repeat", type=int, default=1, help="best of N runs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.workloads = [w for w in args.workloads.split(",") if w]
    unknown = set(args.workloads) - set(TARGETS)
    if unknown:
        parser.error(f"unknown workloads: {', '.join(sorted(unknown))}")
    return args


def main() -> None:
    args = parse_args()
    paths = data.prepare(args.dir, args.rows, args.scale, args.seed)
    if not squall_installed():
        print(f"squall engine is not installed: no executable at {SQUALL}. "
              "Install it (pip install -e .) to benchmark it; printing baseline figures only.")
    print(f"input: {paths['input']} ({args.rows:,} rows); cpus: {os.cpu_count()}; best of {args.repeat}")
    for workload in args.workloads:
        with tempfile.TemporaryDirectory(prefix=f"bench-{workload}-", dir=args.dir) as workdir:
            results = bench_workload(workload, paths, args, Path(workdir))
        print_table(workload, results)


if __name__ == "__main__":
    main()
