"""The public Python API; the CLI and the service call exactly these.

Running jobs (:mod:`squall.pipeline`):

- :func:`run` (spec) → :class:`~squall.result.JobResult`: plan, run and finalize a job.
- :func:`resume` (job id): finish a job whose coordinator stopped; committed parts are kept.
- :func:`redrive` (job id, chunks, overrides): put dead chunks back, optionally with new limits.
- :func:`replay` (job id): run again the rows in ``_errors/`` and in dead chunks, with today's model.
- :func:`cancel` (job id): ask a running job to stop.
- :func:`plan` (spec) → the chunks a job would run; :func:`forecast` (plan, spec) → time and cost.
- :func:`tune` (spec) → a measured recommendation of batch size, chunk size, workers and memory.
- :func:`new_job_id`, :func:`options_given` (a spec's store options, for :func:`resume`).

Reading jobs (:mod:`squall.job_status`): :func:`status`, :func:`jobs`,
:func:`dead_letters`, :func:`report`, and the records they return
(:class:`JobStatus`, :class:`DeadChunk`).

Bad specs, inputs, models and outputs raise :class:`squall.errors.UsageError`
before any work; a job that runs and fails returns state ``FAILED``.
"""

from __future__ import annotations

from squall.pipeline import cancel, forecast, new_job_id, options_given, plan, redrive, replay, resume, run
from squall.result import JobResult
from squall.job_status import DeadChunk, JobStatus, dead_letters, jobs, report, status
from squall.tuning.tuner import Tuning, tune

__all__ = [
    "DeadChunk", "JobResult", "JobStatus", "Tuning", "cancel", "dead_letters", "forecast", "jobs", "new_job_id",
    "options_given", "plan", "redrive", "replay", "report", "resume", "run", "status", "tune",
]
