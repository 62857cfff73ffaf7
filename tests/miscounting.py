"""A model whose worker miscounts: importing this module makes every successful invocation of the worker that
loads it report one row more read than it read. A stand-in for a counting bug in squall, which reconciliation
must catch. Load it only in a worker of a job run as its own process (`--model miscounting:predict`): the patch
applies to the process that imports it."""

from __future__ import annotations

import dataclasses
from typing import Any

import squall.runtime.instance as worker

_invoke = worker.invoke


def _miscounting_invoke(*args: Any, **kwargs: Any) -> Any:
    report = _invoke(*args, **kwargs)
    return dataclasses.replace(report, rows_in=report.rows_in + 1) if report.outcome == "ok" else report


worker.invoke = _miscounting_invoke


def predict(frame):
    return frame["id_copy"].to_numpy() * 2.0
