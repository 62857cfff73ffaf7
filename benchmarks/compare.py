"""One comparison, all peers, one run: squall beside the hand loops, Ray Data, Lithops and Dask, on the same data.

Systems (``compare_systems.py``): squall local (``squall run --workers 2``), squall on Ray (``--backend ray``, a
local Ray that squall starts and stops itself), the hand 1- and 2-process loops (``baselines.py``,
``bench_text.py``), Ray Data, Lithops (localhost) and Dask (``LocalCluster``) (``peer_*.py``, each written the
way its documentation recommends; their docstrings name the pages).

Workloads (``--workloads``):

* ``gbdt``: HistGradientBoostingClassifier (100 trees) ``predict_proba`` over ``--rows`` rows x 32 float32
  features in one Parquet file of 31 row groups (``data.py``);
* ``linear``: LogisticRegression ``predict_proba`` over the same file;
* ``minilm``: all-MiniLM-L6-v2 embeddings of ``--text-rows`` sentences (``bench_text.py``), ``--text-runs`` runs;
* ``gbdt-s3``: the ``gbdt`` workload with its input and output on a loopback S3 server (moto's
  ``ThreadedMotoServer``, run inside this process as ``tests/s3server.py`` and ``bench_io.py`` do).

Method: per workload, one warm-up run of every system that does not count, then ``--runs`` rounds; round r runs
the systems in their canonical order rotated by r, so that no system always goes first or always follows the
same one. Every run is a fresh process tree, timed from just before it starts until its last process exits
(start-up, imports and model load included), with the peak RSS and PSS of the whole tree (``measure.py``). A
run past ``--timeout`` is killed and fails; processes of its tree still alive after it exits are killed and
noted. The same thread caps (workers x threads = the cores) and rows per model call go to every system
(``compare_systems.py``). Every output is read back and compared with the model's own call value by value, by
``id`` (``compare_verify.py``); a run whose output differs is printed and does not count. Outputs are deleted
once checked.

Writes ``compare.md`` (a table per workload), ``compare.json`` (every run's numbers, the machine, the versions,
the date) and ``benchmarks.png`` (rows/s and memory per system per workload) into ``--out``; with ``--docs`` the
chart goes to ``docs/img/benchmarks.png`` instead. The files are rewritten after each workload, so an
interrupted run keeps what it measured.

    python benchmarks/compare.py [--rows 2000000] [--text-rows 20000] [--runs 5] [--text-runs 3] \\
        [--workloads gbdt,linear,minilm,gbdt-s3] [--systems squall-local,...] [--docs]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pyarrow.parquet as pq

import bench_text
import compare_report
import compare_verify
import data
from compare_report import RunRecord
from compare_systems import (
    SKLEARN_BATCH_ROWS, SYSTEMS, TEXT_BATCH_ROWS, WORKERS, Place, System, Workload, by_names, environment, threads,
)
from measure import LEFTOVERS, run_measured_group

HERE = Path(__file__).resolve().parent
WORKLOADS = ("gbdt", "linear", "minilm", "gbdt-s3")
BUCKET = "squall-bench"
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
DOCS_CHART = HERE.parent / "docs" / "img" / "benchmarks.png"
PACKAGES = ("squall", "scikit-learn", "numpy", "pandas", "pyarrow", "torch", "sentence-transformers", "ray", "lithops",
            "dask", "distributed", "s3fs", "moto")


@dataclass(frozen=True)
class Settings:
    """What the command line asked for."""

    rows: int
    text_rows: int
    runs: int
    text_runs: int
    workloads: list[str]
    systems: list[System]
    cores: int
    timeout_s: float
    data_dir: Path
    out: Path
    chart: Path


# --- workloads ---------------------------------------------------------------------------------


def local_workloads(settings: Settings, output_root: Path) -> dict[str, Workload]:
    """The workloads on local files, creating (or reusing) their data and models."""
    found: dict[str, Workload] = {}
    names = settings.workloads
    if {"gbdt", "linear", "gbdt-s3"} & set(names):
        paths = data.prepare(settings.data_dir, settings.rows)
        table = f"{settings.rows:,} rows × {data.N_FEATURES} float32 features, one Parquet file of {data.N_ROW_GROUPS} row groups"
        for name, model, title in (
            ("gbdt", "gbdt", f"GBDT: HistGradientBoostingClassifier (100 trees).predict_proba, {table}"),
            ("linear", "linear", f"Linear: LogisticRegression.predict_proba, {table}"),
        ):
            found[name] = Workload(name, title, "sklearn", paths[model], str(paths["input"]), paths["input"],
                                   settings.rows, SKLEARN_BATCH_ROWS, str(output_root / name))
    if "minilm" in names:
        sentences = _sentences(settings.data_dir, settings.text_rows)
        found["minilm"] = Workload(
            "minilm", f"MiniLM: all-MiniLM-L6-v2 embeddings of {settings.text_rows:,} sentences (4–30 words)", "text",
            bench_text.model_path(), str(sentences), sentences, settings.text_rows, TEXT_BATCH_ROWS,
            str(output_root / "minilm"))
    return found


def _sentences(directory: Path, rows: int) -> Path:
    path = directory / f"sentences-{rows}.parquet"
    if not path.exists() or pq.ParquetFile(path).metadata.num_rows != rows:
        directory.mkdir(parents=True, exist_ok=True)
        bench_text.make_sentences(path, rows)
    return path


def s3_workload(gbdt: Workload, endpoint: str) -> Workload:
    """The GBDT workload with its input uploaded to the loopback server and its outputs written there."""
    import fsspec

    fs = fsspec.filesystem("s3", endpoint_url=endpoint)
    if not fs.exists(BUCKET):
        fs.mkdir(BUCKET)
    key = f"{BUCKET}/input-{gbdt.rows}.parquet"
    fs.put_file(str(gbdt.local_input), key)
    title = gbdt.title.replace("one Parquet file", "one Parquet object") + ", input and output on S3 (moto on loopback)"
    return Workload("gbdt-s3", title.replace("GBDT:", "GBDT on S3:"), gbdt.kind, gbdt.model, f"s3://{key}",
                    gbdt.local_input, gbdt.rows, gbdt.batch_rows, f"s3://{BUCKET}/out/gbdt-s3")


@contextlib.contextmanager
def loopback_s3(needed: bool) -> Iterator[str | None]:
    """A moto S3 server on loopback for the S3 workload; its endpoint and credentials go into this process's
    environment, so every measured process inherits them."""
    if not needed:
        yield None
        return
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        os.environ.update({**S3_CREDENTIALS, "AWS_ENDPOINT_URL": endpoint})
        yield endpoint
    finally:
        server.stop()


# --- runs --------------------------------------------------------------------------------------


def rotated(systems: Sequence[System], round: int) -> list[System]:
    """The systems in round ``round``'s order: the canonical one rotated by ``round``."""
    shift = round % len(systems)
    return [*systems[shift:], *systems[:shift]]


def run_workload(
    workload: Workload, settings: Settings, want: np.ndarray, rounds: int, scratch: Path, ray_tmpdir: Path,
) -> list[RunRecord]:
    """The warm-up round and ``rounds`` measured rounds of every system on ``workload``."""
    records = []
    for round in range(rounds + 1):
        for position, system in enumerate(rotated(settings.systems, round)):
            record = run_once(workload, system, round, position, want, settings, scratch, ray_tmpdir)
            records.append(record)
            _print_run(workload, rounds, record)
    return records


def run_once(
    workload: Workload, system: System, round: int, position: int, want: np.ndarray, settings: Settings, scratch: Path,
    ray_tmpdir: Path,
) -> RunRecord:
    """One measured run of ``system`` on ``workload``, its output checked and then deleted."""
    place = Place(f"{workload.output_root}/{system.name}-r{round}", scratch / f"{workload.name}-{system.name}-r{round}",
                  settings.cores, ray_tmpdir)
    place.scratch.mkdir(parents=True, exist_ok=True)
    _remove(place.output)
    m = run_measured_group(system.commands(workload, place), env=environment(system, place),
                           timeout_s=settings.timeout_s, kill_leftovers=True)
    errors = "\n".join(line for line in m.stderr.splitlines() if not line.startswith(LEFTOVERS)).strip()
    if m.returncode == 0:
        verdict = compare_verify.verify(workload.kind, place.output, want)
    else:
        last = errors.splitlines()[-1] if errors else "no output on stderr"
        verdict = compare_verify.Verdict(False, 0, float("nan"), f"exit {m.returncode}: {last}")
    _remove(place.output)
    shutil.rmtree(place.scratch, ignore_errors=True)
    leftovers = next((line for line in m.stderr.splitlines() if line.startswith(LEFTOVERS)), "")
    return RunRecord(
        workload=workload.name, system=system.name, label=system.label, round=round, position=position,
        wall_s=m.wall_s, peak_rss_mib=m.peak_rss_mib, peak_pss_mib=m.peak_pss_mib, returncode=m.returncode,
        verified=verdict.ok, max_abs_diff=verdict.max_abs_diff, problem=verdict.problem, leftovers=leftovers,
        stderr_tail="" if verdict.ok else errors[-3000:],
    )


def _remove(location: str) -> None:
    import fsspec

    fs, path = fsspec.core.url_to_fs(location)
    fs.invalidate_cache()
    if fs.exists(path):
        fs.rm(path, recursive=True)


def _print_run(workload: Workload, rounds: int, r: RunRecord) -> None:
    which = "warm-up" if r.round == 0 else f"run {r.round}/{rounds}"
    state = "verified" if r.verified else f"INVALID: {r.problem}"
    print(f"[{workload.name} {which}] {r.label:20} {r.wall_s:8.2f} s  RSS {r.peak_rss_mib:7.0f} MiB  "
          f"PSS {r.peak_pss_mib:7.0f} MiB  {state}" + (f"  ({r.leftovers})" if r.leftovers else ""), flush=True)


# --- context and outputs -----------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """What the figures were measured on: cores, memory, CPU model, kernel, Python."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "unknown")
    meminfo = Path("/proc/meminfo").read_text() if Path("/proc/meminfo").exists() else ""
    total_kib = next((int(line.split()[1]) for line in meminfo.splitlines() if line.startswith("MemTotal:")), 0)
    return {
        "nproc": len(os.sched_getaffinity(0)), "cpu_model": model, "mem_total_mib": total_kib // 1024,
        "kernel": platform.release(), "python": platform.python_version(),
    }


def source_commit() -> str:
    """The commit of the squall checkout this script belongs to (``+dirty`` with uncommitted changes)."""
    try:
        commit = subprocess.run(["git", "-C", str(HERE), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "-C", str(HERE), "status", "--porcelain"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def versions() -> dict[str, str]:
    """The versions of squall (and its commit) and of every library the figures depend on."""
    found = {"squall commit": source_commit()}
    for package in PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def context(settings: Settings, started: datetime.datetime) -> dict[str, Any]:
    """What every output file carries besides the runs: date, machine, versions, settings and method."""
    method = (
        f"whole process (start-up, imports and model load included), median of {settings.runs} runs "
        f"({settings.text_runs} for MiniLM) after one warm-up, the systems interleaved in a rotated order; "
        f"{WORKERS} workers × {threads(settings.cores, WORKERS)} thread(s) (OMP/OPENBLAS/MKL), the 1-process loop "
        f"1 × {threads(settings.cores, 1)}; {SKLEARN_BATCH_ROWS:,} rows per model call ({TEXT_BATCH_ROWS:,} sentences "
        f"for MiniLM, encoded 64 at a time); memory is the peak of the whole process tree; every output compared "
        f"value by value with the model's own call."
    )
    return {
        "date": started.isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": versions(),
        "settings": {
            "rows": settings.rows, "text_rows": settings.text_rows, "runs": settings.runs, "text_runs": settings.text_runs,
            "workloads": settings.workloads, "systems": [s.name for s in settings.systems], "cores": settings.cores,
            "workers": WORKERS, "threads_per_worker": threads(settings.cores, WORKERS),
            "batch_rows": {"sklearn": SKLEARN_BATCH_ROWS, "text": TEXT_BATCH_ROWS},
            "tolerances": compare_verify.TOLERANCES, "timeout_s": settings.timeout_s, "method": method,
        },
    }


def write_outputs(
    settings: Settings, workloads: list[Workload], records: list[RunRecord], info: dict[str, Any],
) -> dict[str, list[compare_report.Summary]]:
    """Writes the Markdown, the JSON and the chart for the workloads measured so far; returns the summaries."""
    labels = {s.name: s.label for s in settings.systems}
    summaries = {w.name: compare_report.summarize(w, labels, records) for w in workloads}
    settings.out.mkdir(parents=True, exist_ok=True)
    (settings.out / "compare.md").write_text(compare_report.markdown(workloads, summaries, info))
    (settings.out / "compare.json").write_text(compare_report.json_document(workloads, records, summaries, info))
    machine_line = f"{info['machine']['nproc']} cores, {info['machine']['cpu_model']}, {info['date'][:10]}"
    compare_report.chart(workloads, summaries, settings.chart, machine_line)
    return summaries


# --- entry point -------------------------------------------------------------------------------


def parse_args() -> Settings:
    """The settings from the command line, with errors that name the unknown workload or system."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--text-rows", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=5, help="measured runs per system, after one warm-up")
    parser.add_argument("--text-runs", type=int, default=3, help="measured runs per system on MiniLM")
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--systems", default=",".join(s.name for s in SYSTEMS))
    parser.add_argument("--cores", type=int, default=len(os.sched_getaffinity(0)), help="cores the thread caps fill")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds before a run is killed")
    parser.add_argument("--dir", type=Path, default=data.DEFAULT_DIR, help="data, model and expected-output cache")
    parser.add_argument("--out", type=Path, default=None, help="default benchmarks/.out/compare-<date>")
    parser.add_argument("--docs", action="store_true", help=f"write the chart to {DOCS_CHART.relative_to(HERE.parent)}")
    args = parser.parse_args()
    workloads = [w for w in args.workloads.split(",") if w]
    unknown = sorted(set(workloads) - set(WORKLOADS))
    if unknown:
        parser.error(f"unknown workloads {', '.join(unknown)}: choose from {', '.join(WORKLOADS)}")
    try:
        systems = by_names([s for s in args.systems.split(",") if s])
    except ValueError as err:
        parser.error(str(err))
    out = args.out or HERE / ".out" / f"compare-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    return Settings(args.rows, args.text_rows, args.runs, args.text_runs, workloads, systems, args.cores, args.timeout,
                    args.dir, out, DOCS_CHART if args.docs else out / "benchmarks.png")


def main() -> None:
    """Prepares the data, runs every workload's rounds and writes the outputs."""
    settings = parse_args()
    started = datetime.datetime.now().astimezone()
    info = context(settings, started)
    records: list[RunRecord] = []
    done: list[Workload] = []
    with contextlib.ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="squall-compare-")))
        ray_tmpdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ray-")))
        endpoint = stack.enter_context(loopback_s3("gbdt-s3" in settings.workloads))
        found = local_workloads(settings, scratch / "out")
        if endpoint is not None:
            found["gbdt-s3"] = s3_workload(found["gbdt"], endpoint)
        for name in settings.workloads:
            workload = found[name]
            print(f"\n{workload.title}: the model's own outputs (cached in {settings.data_dir})", flush=True)
            cache = settings.data_dir / f"expected-{workload.name.removesuffix('-s3')}-{workload.rows}.npy"
            want = compare_verify.expected(workload.kind, workload.model, workload.local_input, cache)
            rounds = settings.text_runs if workload.kind == "text" else settings.runs
            records += run_workload(workload, settings, want, rounds, scratch, ray_tmpdir)
            done.append(workload)
            write_outputs(settings, done, records, info)
    summaries = write_outputs(settings, done, records, info)
    print("\n" + compare_report.markdown(done, summaries, info))
    print(f"wrote {settings.out / 'compare.md'}, {settings.out / 'compare.json'} and {settings.chart}")


if __name__ == "__main__":
    main()
