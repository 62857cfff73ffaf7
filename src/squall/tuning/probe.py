"""The tuning probe: a fresh process that loads the model as a worker does and times real invocations of a sample chunk.

For each batch size it runs the sample chunk through the same invocation a
worker runs (read → steps → write an attempt part) and reports the fastest
run's duration and its peak resident memory. Run as
``python -m squall.tuning.probe``: a JSON request on stdin
(``task``, ``chunk``, ``batch_sizes``, ``repeats``), a JSON answer on stdout
(``baseline_mb`` and one ``runs`` entry per batch size).
"""

from __future__ import annotations

import dataclasses
import gc
import json
import sys
from typing import Any

from squall.models.registry import load_warm
from squall.plan.chunk import Chunk
from squall.runtime.invocation import Steps, invoke
from squall.runtime.peak_memory import peak_mb, reset_peak
from squall.runtime.task import JobTask


def measure(request: dict[str, Any]) -> dict[str, Any]:
    """Time the sample chunk at each batch size; the first, untimed run pays for first-call costs."""
    task = JobTask.from_json(request["task"])
    chunk = Chunk.from_json(request["chunk"])
    model = load_warm(task.model)
    first = dataclasses.replace(task, batch_size=min(request["batch_sizes"]))
    invoke(first, chunk, 0, -1, Steps.for_task(first, model))
    gc.collect()
    reset_peak()
    baseline = peak_mb()
    runs = []
    for batch_size in request["batch_sizes"]:
        sized = dataclasses.replace(task, batch_size=batch_size)
        steps = Steps.for_task(sized, model)  # the steps hold the worker's batch size
        reports = [invoke(sized, chunk, attempt, -1, steps) for attempt in range(1, int(request["repeats"]) + 1)]
        failed = [r for r in reports if r.outcome != "ok"]
        if failed:
            return {"error": str(failed[0].error)}
        runs.append({
            "batch_size": batch_size,
            "rows": reports[0].rows_in,
            "seconds": min(r.duration_s for r in reports),
            "peak_mb": max(r.max_rss_mb for r in reports),
        })
        gc.collect()
    return {"baseline_mb": baseline, "runs": runs}


if __name__ == "__main__":
    json.dump(measure(json.load(sys.stdin)), sys.stdout)
