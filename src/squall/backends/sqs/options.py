"""The SQS backend's options: ``[backend.sqs]`` in a spec file, ``--sqs-OPTION`` on the command line."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from pydantic import Field

from squall.backends.base import BackendOptions
from squall.io.storage import is_remote
from squall.models.code import is_code_ref

if TYPE_CHECKING:
    from squall.spec import JobSpec

RESULTS_SUFFIX = "-results"
DEAD_LETTER_SUFFIX = "-dlq"


class SqsOptions(BackendOptions):
    """Which queues carry the job's invocations and reports, and how the coordinator polls for reports."""

    cli_aliases: ClassVar[dict[str, str]] = {"queue": "--queue"}

    queue: str | None = Field(
        None, description="SQS request queue (a name, or a queue URL) the workers consume; `--queue` for short."
    )
    results_queue: str | None = Field(
        None, description="SQS queue the workers send their reports to; default the request queue's name + `-results`."
    )
    region: str | None = Field(None, description="AWS region of the queues; default `$AWS_REGION` / `$AWS_DEFAULT_REGION`.")
    wait_s: int = Field(1, ge=0, le=20, description="Seconds one poll of the results queue waits for a report (SQS long polling).")
    shared_filesystem: bool = Field(
        False,
        description="The workers see this machine's paths (same host, or a shared mount): allow local inputs, model and output.",
    )

    def check(self, spec: JobSpec) -> None:
        if spec.backend != "sqs":
            return
        if not self.queue:
            raise ValueError("the sqs backend needs its request queue: give `--queue NAME` (or `sqs_queue`)")
        local_model = not is_code_ref(spec.model) and not is_remote(spec.model)
        if local_model and not self.shared_filesystem:
            raise ValueError(
                f"the model {spec.model} is a path on this machine, which SQS workers elsewhere cannot read; put it on "
                "an object store (s3://…), or pass --sqs-shared-filesystem if every worker sees this path"
            )

    def results_queue_name(self) -> str:
        """The results queue: as given, else the request queue's name with ``-results``."""
        assert self.queue, "checked by check()"
        return self.results_queue or queue_name(self.queue) + RESULTS_SUFFIX


def queue_name(queue: str) -> str:
    """A queue's name, given its name or its URL (the URL's last segment)."""
    return queue.rstrip("/").rsplit("/", 1)[-1]
