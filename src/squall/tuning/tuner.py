"""``squall tune``: measure the model on a sample of the real input, recommend, and write the tuned spec.

The sample is the first chunk of the input cut at ``sample_rows`` rows. It is
run in a fresh process with one BLAS/OpenMP thread, as each of one-per-core
workers runs (:mod:`squall.tuning.probe`), at several batch sizes; the
recommendation follows :mod:`squall.tuning.recommend`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from squall.errors import InputError, ModelLoadError, SpecError
from squall.observe.cost import PriceTable
from squall.runtime.environment import worker_environment
from squall.spec import JobSpec, dump_spec_toml
from squall.tuning.recommend import BatchRun, Recommendation, recommend

BATCH_SIZES = (1024, 4096, 16384, 65536)
DEFAULT_SAMPLE_ROWS = 50_000
REPEATS = 2


@dataclass(frozen=True)
class Tuning:
    """The recommendation, the sample it came from, and the tuned spec's values."""

    recommendation: Recommendation
    sample_rows: int
    total_rows: int
    tuned_values: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The sample, the job's size and the recommendation, as plain data."""
        return {"sample_rows": self.sample_rows, "total_rows": self.total_rows, **self.recommendation.to_dict()}


def tune(
    spec: JobSpec, file_values: Mapping[str, Any] | None = None, objective: str = "time", sample_rows: int | None = None
) -> Tuning:
    """Measure ``spec``'s model on a sample of its input (``sample_rows`` rows) and recommend batch_size,
    chunk_rows, workers and memory for ``objective`` (``time`` or ``cost``); ``file_values`` are kept in the
    tuned spec."""
    from squall.pipeline import plan
    from squall.plan.planner import make_plan
    from squall.resolve import ResolvedJob

    if objective not in ("time", "cost"):
        raise SpecError(f"objective must be `time` or `cost`, not {objective!r}")
    sample_rows = sample_rows or DEFAULT_SAMPLE_ROWS
    full = plan(spec)
    if not full.est_rows:
        raise InputError(f"the input {spec.input} holds no rows to measure the model on")
    sample = make_plan(spec.model_copy(update={"chunk_rows": sample_rows, "workers": 1}), "tune").chunks[0]
    current = spec.batch_size if isinstance(spec.batch_size, int) else BATCH_SIZES[-1]
    sizes = sorted({size for size in BATCH_SIZES if size < sample.est_rows} | {min(current, max(1, sample.est_rows))})
    scratch = tempfile.mkdtemp(prefix="squall-tune-")
    try:
        task = ResolvedJob.of(spec.model_copy(update={"output": scratch})).task(full)
        answer = _probe({"task": task.to_json(), "chunk": sample.to_json(), "batch_sizes": sizes, "repeats": REPEATS})
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    runs = [BatchRun(**run) for run in answer["runs"]]
    found = recommend(runs, answer["baseline_mb"], full.est_rows, spec.timeout, os.cpu_count() or 1, objective,  # type: ignore[arg-type]
                      PriceTable.of(spec))
    return Tuning(found, runs[0].rows, full.est_rows, {**(file_values or {}), **found.fields()})


def write_tuned(tuning: Tuning, path: str | Path, source: str | None) -> None:
    """Write the tuned spec as TOML, with a comment saying where it came from."""
    rec = tuning.recommendation
    header = (
        f"# tuned by `squall tune` from {source or 'command-line options'} (objective: {rec.objective}):\n"
        f"# {rec.rows_per_s:,.0f} rows/s per worker at batch_size {rec.batch_size}, "
        f"{rec.memory_per_row_kb:.2f} KB per row, measured on {tuning.sample_rows:,} sample rows\n"
    )
    Path(path).write_text(header + dump_spec_toml(tuning.tuned_values), encoding="utf-8")


def _probe(request: dict[str, Any]) -> dict[str, Any]:
    env = worker_environment(threads=1)
    done = subprocess.run(
        [sys.executable, "-m", "squall.tuning.probe"], input=json.dumps(request), capture_output=True, text=True, env=env
    )
    if done.returncode != 0:
        raise ModelLoadError(f"the tuning probe failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
    answer: dict[str, Any] = json.loads(done.stdout)
    if "error" in answer:
        raise ModelLoadError(f"the model failed on the sample: {answer['error']}")
    return answer
