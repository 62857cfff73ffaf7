"""A warm function instance: what every backend's worker is, wherever it runs.

It loads the model once (the cold start), takes the job's task once, then
runs invocations one at a time, keeping the model loaded in between. A local
worker process, a Ray actor, a ``squall worker`` polling a queue and a Lambda
execution environment each hold one and differ only in how messages reach it.
It never opens the job store: it receives descriptors and returns reports.
"""

from __future__ import annotations

from typing import Any

from squall.io import storage
from squall.models.base import LoadedModel
from squall.models.registry import load_warm
from squall.runtime.invocation import Steps, invoke
from squall.runtime.messages import Invoke, Load
from squall.runtime.task import InvocationReport, JobTask


def load_model(message: Load) -> LoadedModel:
    """Load the model ``message`` names, and what its first batch would otherwise import (so that counts
    as the cold start, not as the first invocation). Raises whatever loading raises."""
    ref = message.model
    storage.configure(ref.storage_options, filter(None, (ref.uri, ref.state_dict)))  # before the job's task arrives
    model = load_warm(ref)
    _preload(model.batch_format if message.batch_format == "auto" else message.batch_format)
    return model


class WarmInstance:
    """One worker's loaded model, and the job it serves once configured."""

    def __init__(self, worker: int, model: LoadedModel) -> None:
        self.worker = worker
        self.model = model
        self._task: JobTask | None = None
        self._steps: Steps | None = None

    @property
    def task(self) -> JobTask | None:
        """The job this instance serves, once configured."""
        return self._task

    def configure(self, task: JobTask) -> None:
        """Serve ``task`` from now on; raises if the model cannot serve it (a pre- or postprocess step that does
        not import, say), which is a load failure: every worker would fail the same way."""
        storage.configure(task.storage_options, task.locations)
        self._steps = Steps.for_task(task, self.model)
        self._task = task

    def invoke(self, message: Invoke) -> InvocationReport:
        """Run one invocation; it never raises (whatever happens is in the report)."""
        assert self._task is not None and self._steps is not None, "an invocation arrived before the job's task"
        return invoke(self._task, message.chunk, message.attempt, self.worker, self._steps, message.output_schema)


def _preload(batch_format: str) -> Any:
    if batch_format == "pandas":
        import pandas

        return pandas
    return None
