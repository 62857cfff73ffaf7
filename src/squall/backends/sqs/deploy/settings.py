"""What one deployment is: :class:`DeploySettings`, checked against what AWS accepts before anything is sent.

A deployment named ``NAME`` owns the queues ``NAME`` (requests), ``NAME-results``,
``NAME-dlq`` and ``NAME-events``, the function ``NAME`` and its log group; the
limits are the ones a local run has (``memory``, ``timeout``, and the job's
concurrency, ``workers``), checked against Lambda's bounds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from squall.errors import UsageError

# Lambda's own bounds: memory 128 MB..10,240 MB, timeout 1..900 s, an SQS event source's MaximumConcurrency 2..1,000.
LAMBDA_MAX_TIMEOUT_S = 900
# SQS wants the visibility timeout at least the function's timeout; AWS recommends six times it, so that a batch
# retried by the event source after throttling is not delivered again while it is still being processed.
VISIBILITY_FACTOR = 6
SQS_MAX_VISIBILITY_S = 43_200
_GLOB = re.compile(r"[*?\[{]")


@dataclass(frozen=True)
class S3Location:
    """An object or a prefix in S3: ``s3://bucket/key``. ``key`` of a prefix ends with ``/`` (or is empty: the bucket)."""

    bucket: str
    key: str

    @classmethod
    def parse(cls, uri: str, option: str) -> S3Location:
        """``uri`` (``s3://bucket/key``), or a UsageError naming ``option``."""
        match = re.fullmatch(r"s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:/(.*))?", uri.strip())
        if not match:
            raise UsageError(f"{option} must be an S3 URL such as s3://bucket/path/, not {uri!r}")
        return cls(match[1], match[2] or "")

    @classmethod
    def prefix_of(cls, uri: str, option: str) -> S3Location:
        """The folder ``uri`` names, or holds its files: the part before any glob, up to its last ``/``
        (``s3://b/in/*.parquet`` and ``s3://b/in/`` both give ``in/``; ``s3://b/in`` is taken as the folder ``in/``)."""
        found = cls.parse(uri, option)
        glob = _GLOB.search(found.key)
        key = found.key[: glob.start()].rpartition("/")[0] if glob else found.key.rstrip("/")
        return cls(found.bucket, key + "/" if key else "")


Architecture = Literal["x86_64", "arm64"]


class DeploySettings(BaseModel):
    """One deployment: its name, what its function may read and write, its limits and its triggers."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    stack: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9-]{0,47}$", description="Stack name; also the function's and the queues' name.")
    models: tuple[str, ...] = Field(min_length=1, description="S3 URLs of the models the function may read.")
    input_prefix: str = Field(description="S3 prefix the function may read inputs from.")
    output_prefix: str = Field(description="S3 prefix the function may read, write and delete under.")
    memory: int = Field(3008, ge=128, le=10_240, description="Function memory in MB.")
    timeout: int = Field(LAMBDA_MAX_TIMEOUT_S, ge=1, le=LAMBDA_MAX_TIMEOUT_S, description="Function timeout in seconds.")
    max_concurrency: int = Field(10, ge=2, le=1000, description="Most concurrent functions the request queue invokes.")
    max_receive_count: int = Field(3, ge=1, le=1000, description="Receives of a message before SQS moves it to NAME-dlq.")
    image: str | None = Field(None, description="Container image URI (ECR) built from Dockerfile.lambda.")
    architecture: Architecture = Field("x86_64", description="The image's architecture.")
    trigger_prefix: str | None = Field(None, description="S3 prefix whose new objects notify NAME-events.")
    schedule: str | None = Field(None, description="EventBridge schedule expression that notifies NAME-events.")
    log_retention_days: int = Field(30, description="Days CloudWatch keeps the function's logs.")

    @field_validator("schedule")
    @classmethod
    def _schedule_expression(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"(rate|cron)\(.+\)", value.strip()):
            raise ValueError("give an EventBridge schedule expression, e.g. 'rate(1 hour)' or 'cron(0 2 * * ? *)'")
        return value

    @field_validator("log_retention_days")
    @classmethod
    def _retention_cloudwatch_accepts(cls, value: int) -> int:
        if value not in _RETENTION_DAYS:
            raise ValueError(f"CloudWatch keeps logs for one of {', '.join(map(str, _RETENTION_DAYS))} days")
        return value

    def model_locations(self) -> list[S3Location]:
        """Each model as an S3 object (its key may also be a folder: an MLflow model, a saved transformer)."""
        return [S3Location.parse(uri, "--model") for uri in self.models]

    def input_location(self) -> S3Location:
        """The folder the function may read inputs from."""
        return S3Location.prefix_of(self.input_prefix, "--input-prefix")

    def output_location(self) -> S3Location:
        """The folder the function may read, write and delete under."""
        return S3Location.prefix_of(self.output_prefix, "--output-prefix")

    def trigger_location(self) -> S3Location | None:
        """The folder whose new objects notify the events queue, if any."""
        return None if self.trigger_prefix is None else S3Location.prefix_of(self.trigger_prefix, "--trigger-prefix")

    def visibility_timeout(self) -> int:
        """The request queue's visibility timeout: six times the function's timeout, within SQS's 12 hours."""
        return min(SQS_MAX_VISIBILITY_S, VISIBILITY_FACTOR * self.timeout)

    def queue_names(self) -> dict[str, str]:
        """The deployment's queues by role: requests, results, dlq, events (the names the ``sqs`` backend resolves)."""
        return {"requests": self.stack, "results": f"{self.stack}-results", "dlq": f"{self.stack}-dlq",
                "events": f"{self.stack}-events"}


_OPTIONS = {"models": "model"}
_HINTS = {
    "stack": " (letters, digits and hyphens, a letter first, at most 48: the queues' names add -results and -events)",
    "timeout": " (Lambda's limit is 900 s: cut smaller chunks, --chunk-rows, so each fits)",
    "memory": " (Lambda gives a function 128 to 10,240 MB)",
    "max_concurrency": " (an SQS event source invokes 2 to 1,000 functions at once)",
    "models": " (the S3 URL of each model the function may read, or --spec with a `model`)",
    "input_prefix": " (the function's role may read inputs only there: an S3 prefix or glob, or --spec with an `input`)",
    "output_prefix": " (the function's role may write only there: an S3 prefix, or --spec with an `output`)",
}


def _problem(error: Any) -> str:
    field = str(error["loc"][0]) if error["loc"] else "stack"
    option = "--" + _OPTIONS.get(field, field).replace("_", "-")
    return f"{option}: {error['msg'].removeprefix('Value error, ')}{_HINTS.get(field, '')}"


_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653)


def deploy_settings(**values: object) -> DeploySettings:
    """:class:`DeploySettings` from ``values``, every S3 location checked; a UsageError naming the option otherwise."""
    try:
        settings = DeploySettings.model_validate(values)
    except ValidationError as exc:
        raise UsageError("cannot deploy: " + "; ".join(_problem(error) for error in exc.errors())) from None
    settings.model_locations(), settings.input_location(), settings.output_location(), settings.trigger_location()
    return settings
