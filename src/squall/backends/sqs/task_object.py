"""The job's task stored once per job beside its output, so that a dispatch carries a reference, not the task.

It lives at ``<output>/_squall/<job_id>/task.json``: under the job's own
prefix, where the workers already have the right to write. It is written
redacted (:mod:`squall.secrets`): a worker reaches the stores with its own
credentials (its environment, instance profile or execution role), never with
ones the coordinator wrote down. A worker reads it back only from where the
job's output says it must be, for the job the dispatch names.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import fsspec

from squall.errors import MessageRefused
from squall.io.layout import join
from squall.runtime.task import JobTask
from squall.secrets import MARK, redact_json

TASK_DIR = "_squall"


def task_uri(output: str, job_id: str) -> str:
    """Where the task of ``job_id`` writing to ``output`` is stored."""
    return join(output, TASK_DIR, job_id, "task.json")


def write_task(task: JobTask) -> str:
    """Store ``task`` (redacted) under its job's output prefix; returns its URI."""
    uri = task_uri(task.output, task.job_id)
    fs, path = fsspec.core.url_to_fs(uri)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    fs.pipe_file(path, redact_json(task.to_json()).encode())
    return uri


def read_task(uri: str, job_id: str) -> JobTask:
    """The task of ``job_id`` stored at ``uri``, its redacted secrets left out (the worker's own credentials
    apply); raises :class:`MessageRefused` when it cannot be read or is not that job's task under its output."""
    try:
        with fsspec.open(uri, "rb") as handle:
            data = json.loads(handle.read())
        task = JobTask.from_dict(_without_marks(data))
    except Exception as exc:
        raise MessageRefused(
            f"cannot read the task of job {job_id} at {uri} ({type(exc).__name__}: {exc}); give this worker read "
            "access to the job's output prefix"
        ) from None
    if task.job_id != job_id or task_uri(task.output, job_id) != uri:
        raise MessageRefused(f"{uri} is not the task of job {job_id} under its own output; the message is refused")
    return task


def _without_marks(value: Any) -> Any:
    """``value`` without the entries whose secret was redacted: the storage client finds its own."""
    if isinstance(value, Mapping):
        return {key: _without_marks(item) for key, item in value.items() if item != MARK}
    if isinstance(value, list):
        return [_without_marks(item) for item in value]
    return value
