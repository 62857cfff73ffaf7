"""The records that cross the process boundary: what a job asks of every invocation, and what one reports."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from squall.errors import ErrorInfo
from squall.formats.options import ReadOptions
from squall.models.base import ModelRef
from squall.states import Outcome

REPORT_VERSION = 1


@dataclass(frozen=True)
class OutputNaming:
    """How prediction columns are named: a single name/prefix, or explicit names."""

    prefix: str = "prediction"
    explicit: tuple[str, ...] = ()
    layout: str = "auto"


@dataclass(frozen=True)
class JobTask:
    """Everything an invocation needs besides its chunk; the same for every chunk of a job."""

    job_id: str
    model: ModelRef
    read_options: ReadOptions
    key: tuple[str, ...]
    features: tuple[str, ...]
    batch_size: int | str
    batch_format: str
    preprocess: str | None
    postprocess: str | None
    output: str
    output_format: str
    naming: OutputNaming
    part_prefix: str = ""
    memory_mb: int | None = None
    storage_options: dict[str, Any] = field(default_factory=dict)
    locations: tuple[str, ...] = ()
    """Every location the job reads or writes (inputs, output, model): whose stores get ``storage_options``."""

    def to_dict(self) -> dict[str, Any]:
        """The task as plain data."""
        return asdict(self)

    def to_json(self) -> str:
        """The task as a JSON document."""
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> JobTask:
        """Parse a task written by :meth:`to_json`."""
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobTask:
        """The task :meth:`to_dict` made ``data`` from."""
        read = data["read_options"]
        return cls(
            **{
                **data,
                "model": ModelRef(**data["model"]),
                "read_options": ReadOptions(
                    **{**read, "column_types": tuple(map(tuple, read["column_types"])), "columns": tuple(read["columns"])}
                ),
                "key": tuple(data["key"]),
                "features": tuple(data["features"]),
                "naming": OutputNaming(**{**data["naming"], "explicit": tuple(data["naming"]["explicit"])}),
                "locations": tuple(data.get("locations", ())),
            }
        )


@dataclass(frozen=True)
class InvocationReport:
    """What one invocation did, as a function platform's REPORT line says it."""

    job_id: str
    chunk_id: int
    attempt: int
    worker: int
    outcome: Outcome
    rows_in: int = 0
    rows_out: int = 0
    error_rows: int = 0
    part: str | None = None
    error_part: str | None = None
    started_at: float = 0.0
    duration_s: float = 0.0
    init_s: float | None = None
    max_rss_mb: float = 0.0
    batch_size: int = 0
    error: ErrorInfo | None = None
    retryable: bool = True
    part_schema: str | None = None
    """The schema the part was written in (:func:`squall.io.output_schema.schema_text`), when there is a part."""
    environment_fault: bool = False
    """The error blames the environment (a full or read-only output), not the chunk: the job stops, no retry."""
    version: int = REPORT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "error": self.error.__dict__ if self.error else None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InvocationReport:
        error = ErrorInfo(**data["error"]) if data.get("error") else None
        return cls(**{**data, "error": error, "outcome": Outcome(data["outcome"])})
