"""squall: batch prediction the serverless way.

``squall.run(squall.JobSpec(model=..., input=..., output=...))`` returns a
:class:`JobResult`. Importing squall loads nothing heavy; the engine's
dependencies load when a job starts. The dry run is ``squall.api.plan``
(``squall.plan`` is the planning package).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from squall.errors import SquallError

if TYPE_CHECKING:
    from squall.api import cancel, dead_letters, jobs, redrive, replay, resume, run, status
    from squall.result import JobResult
    from squall.spec import JobSpec

_API = ("run", "resume", "redrive", "replay", "cancel", "status", "jobs", "dead_letters")
__all__ = ["JobSpec", "JobResult", "SquallError", *_API]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in _API:
        from squall import api

        return getattr(api, name)
    if name == "JobSpec":
        from squall.spec import JobSpec

        return JobSpec
    if name == "JobResult":
        from squall.result import JobResult

        return JobResult
    raise AttributeError(f"module 'squall' has no attribute {name!r}")
