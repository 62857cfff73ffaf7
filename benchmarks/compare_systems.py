"""The workloads and systems of ``compare.py``: for each system, the command(s) that run one workload end to end.

Every system gets the same thread caps, through the environment, set before any library is imported:
``OMP_NUM_THREADS = OPENBLAS_NUM_THREADS = MKL_NUM_THREADS = cores // workers`` (1 on a 2-core machine with 2
workers; the 1-process loop gets all the cores), and the same rows per model call (``Workload.batch_rows``:
65,536 for the sklearn workloads, 1,024 sentences for MiniLM, which every system encodes 64 at a time).

* ``squall local``: ``squall run --workers 2 --threads-per-worker T --batch-size B`` (the CLI);
* ``squall on Ray``: the same with ``--backend ray``; squall starts a local Ray itself (``ray.init`` with the
  machine's cores) and stops it at the end, all inside the measured process;
* ``1-process loop`` and ``2-process loop``: ``baselines.py`` (sklearn) and ``bench_text.py`` (MiniLM);
* ``Ray Data``, ``Lithops``, ``Dask``: ``peer_raydata.py``, ``peer_lithops.py``, ``peer_dask.py`` (their
  docstrings say which documentation each follows).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import baselines
import bench_text

HERE = Path(__file__).resolve().parent
SQUALL = Path(sys.executable).parent / "squall"
WORKERS = 2
METHOD = "predict_proba"
SKLEARN_BATCH_ROWS = 65_536
TEXT_BATCH_ROWS = 1_024
QUIET_ENV = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "RAY_USAGE_STATS_ENABLED": "0"}
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass(frozen=True)
class Place:
    """Where one run happens: its output location, a scratch folder of its own, the machine's cores, and the temp
    folder of the Ray it may start (short: Ray's socket paths under it must fit in 107 bytes)."""

    output: str
    scratch: Path
    cores: int
    ray_tmpdir: Path


@dataclass(frozen=True)
class Workload:
    """One job every system runs: a model over an input, the output under ``output_root``."""

    name: str
    title: str
    kind: str  # "sklearn" or "text" (peer_common.KINDS)
    model: Path
    input: str  # a local path or an s3:// URI
    local_input: Path  # the same rows on local disk, for the model's own call
    rows: int
    batch_rows: int
    output_root: str  # a local directory or an s3:// prefix


Commands = Callable[[Workload, Place], "list[list[str]]"]


@dataclass(frozen=True)
class System:
    """A system under test: how many workers it runs and the commands for one workload."""

    name: str
    label: str
    workers: int
    commands: Commands
    needs_pythonpath: bool = False  # its processes import this folder's modules (Ray and Dask workers do)
    starts_ray: bool = False


def threads(cores: int, workers: int) -> int:
    """BLAS/OpenMP threads per process so that ``workers`` processes fill ``cores``."""
    return max(1, cores // workers)


def thread_env(cores: int, workers: int) -> dict[str, str]:
    """The BLAS/OpenMP caps for ``workers`` processes sharing ``cores``."""
    return {name: str(threads(cores, workers)) for name in THREAD_VARS}


def environment(system: System, place: Place) -> dict[str, str]:
    """What a system's processes get on top of the harness's environment. A system that starts a local Ray gets
    a Ray temp folder of its own (``RAY_TMPDIR``): ``ray.init()`` joins the cluster last started with ``ray start``
    on this machine, found through the default temp folder, and another session's would not be this run's."""
    env = {**QUIET_ENV, **thread_env(place.cores, system.workers)}
    if system.needs_pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p)
    if system.starts_ray:
        env["RAY_TMPDIR"] = str(place.ray_tmpdir)
    return env


def _squall(extra: list[str]) -> Commands:
    def commands(workload: Workload, place: Place) -> list[list[str]]:
        fields = ["--features", "text", "--prediction-column", "embedding"] if workload.kind == "text" else ["--method", METHOD]
        return [[
            str(SQUALL), "run", "--model", str(workload.model), "--input", workload.input, "--output", place.output,
            "--key", "id", *fields, "--workers", str(WORKERS), "--threads-per-worker", str(threads(place.cores, WORKERS)),
            "--batch-size", str(workload.batch_rows), "--state-dir", str(place.scratch / "state"), "--overwrite",
            "--quiet", "--job-id", f"compare-{time.time_ns()}", *extra,
        ]]
    return commands


def _loop(processes: int) -> Commands:
    def commands(workload: Workload, place: Place) -> list[list[str]]:
        if workload.kind == "text":
            return bench_text.loop_cmds(Path(workload.input), Path(place.output), processes)
        if processes == 1:
            return baselines.one_process_cmds(workload.model, workload.input, f"{place.output.rstrip('/')}/part-0.parquet", METHOD)
        return baselines.two_process_cmds(workload.model, workload.input, place.output, METHOD)
    return commands


def _peer(script: str) -> Commands:
    def commands(workload: Workload, place: Place) -> list[list[str]]:
        return [[
            sys.executable, str(HERE / script), "--kind", workload.kind, "--model", str(workload.model),
            "--input", workload.input, "--output", place.output, "--batch-rows", str(workload.batch_rows),
        ]]
    return commands


SYSTEMS = (
    System("squall-local", "squall local", WORKERS, _squall([])),
    System("squall-ray", "squall on Ray", WORKERS, _squall(["--backend", "ray"]), starts_ray=True),
    System("loop-1", "1-process loop", 1, _loop(1)),
    System("loop-2", "2-process loop", WORKERS, _loop(2)),
    System("ray-data", "Ray Data", WORKERS, _peer("peer_raydata.py"), needs_pythonpath=True, starts_ray=True),
    System("lithops", "Lithops (localhost)", WORKERS, _peer("peer_lithops.py"), needs_pythonpath=True),
    System("dask", "Dask (LocalCluster)", WORKERS, _peer("peer_dask.py"), needs_pythonpath=True),
)
BASELINE = "loop-2"


def by_names(names: list[str]) -> list[System]:
    """The systems named (in the canonical order), or ValueError naming the unknown ones."""
    known = {s.name for s in SYSTEMS}
    unknown = sorted(set(names) - known)
    if unknown:
        raise ValueError(f"unknown systems {', '.join(unknown)}: choose from {', '.join(s.name for s in SYSTEMS)}")
    return [s for s in SYSTEMS if s.name in names]
