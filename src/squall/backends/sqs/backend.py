"""The SQS backend: each attempt the coordinator dispatches is one message on an SQS queue; whatever consumes
the queue (``squall worker`` processes, AWS Lambda functions) runs it and replies on a results queue.

The coordinator and its store are unchanged and stay the only committer. The
backend gives the coordinator ``workers`` *slots*: a slot is one message in
flight, so the job's concurrency cap is the number of messages in flight
(queue-based throttling). ``submit`` sends a :class:`~.envelope.Dispatch` naming
its slot; ``wait`` long-polls the results queue and turns each
:class:`~.envelope.Reply` into the ``InvocationDone`` the coordinator already
handles. The job's task is stored once, beside the output
(:mod:`.task_object`), and each dispatch refers to it.

A timeout cannot kill a remote function: ``kill`` abandons the attempt and
frees its slot. If the attempt still reports later (a slow worker, or a
redelivery after a worker died), the report reaches the coordinator as a late
one, which it records and discards with its files, as for a duplicate
delivery. Each dispatch carries the job's ``timeout`` (none when the batch
lane is on, whose chunks have a longer one): ``squall worker`` ends itself
when an invocation runs past it, as Lambda ends a function at its timeout.

A consumer says when it takes a message off the queue
(:class:`~.envelope.Started`): the attempt's time limit counts from then
(``InvocationStarted``), not from the dispatch, so waiting in the queue for a
consumer is not running out of time. Until a consumer takes it, the deadline counts from the dispatch: a message
that waits longer than ``timeout`` for a consumer is abandoned and retried
like a timeout, so give ``workers`` no more than the consumers there are.

Reports of another job (two coordinators sharing a results queue) are left
for their coordinator: hidden for a few seconds, then received again; one
that no coordinator takes for ``FOREIGN_RECEIVES`` receives belongs to a job
that ended, and is deleted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from squall.backends.base import InvocationDone, InvocationStarted, WorkerEvent
from squall.backends.sqs.envelope import Dispatch, Reply, Started, parse_result
from squall.backends.sqs.options import SqsOptions
from squall.backends.sqs.queues import Queue, Received
from squall.backends.sqs.task_object import write_task
from squall.errors import InputError, MessageRefused
from squall.io.storage import is_remote
from squall.models.base import ModelRef
from squall.plan.chunk import Chunk
from squall.runtime.messages import Invoke
from squall.runtime.task import JobTask

if TYPE_CHECKING:
    from squall.spec import JobSpec

FOREIGN_HIDE_S = 5
FOREIGN_RECEIVES = 60
_log = logging.getLogger("squall.sqs")


class SqsBackend:
    """Attempts as SQS messages, reports from a results queue (see the module docstring)."""

    Options = SqsOptions

    @classmethod
    def from_spec(cls, spec: JobSpec, options: SqsOptions, log_dir: Path) -> SqsBackend:
        """The queues ``options`` name; the workers are whoever consumes them."""
        return cls(options, None if spec.batch_lane else spec.timeout)

    def __init__(self, options: SqsOptions, timeout_s: float | None = None) -> None:
        self._options = options
        self._timeout_s = timeout_s
        self._requests: Queue | None = None
        self._results: Queue | None = None
        self._task: JobTask | None = None
        self._task_uri = ""
        self._in_flight: dict[int, tuple[int, int] | None] = {}  # slot -> (chunk, attempt) it waits for
        self._cold_starts = 0
        self._remote_workers: set[str] = set()

    def start(self, model: ModelRef, workers: int) -> None:
        """Find both queues (a missing one is a usage error before any work) and open ``workers`` slots."""
        assert self._options.queue, "SqsOptions.check requires it"
        self._requests = Queue.named(self._options.queue, self._options.region)
        self._results = Queue.named(self._options.results_queue_name(), self._options.region)
        self._in_flight = {slot: None for slot in range(workers)}

    def configure(self, task: JobTask) -> None:
        """Store the job's task beside its output, where every dispatch refers to it."""
        self._task_uri = write_task(task)
        self._task = task

    def idle(self) -> list[int]:
        if self._task is None:
            return []
        return [slot for slot, waiting in self._in_flight.items() if waiting is None]

    def check_reach(self, files: Sequence[tuple[str, int | None]], output: str) -> None:
        """Workers run elsewhere: a path on this machine is refused unless ``shared_filesystem`` says they see it."""
        if self._options.shared_filesystem:
            return
        local = [path for path, _ in files if not is_remote(path)] + ([output] if not is_remote(output) else [])
        if local:
            raise InputError(
                f"{local[0]} is a path on this machine, which SQS workers elsewhere cannot reach; put inputs, model and "
                "output on an object store (s3://…), or pass --sqs-shared-filesystem if every worker sees this path"
            )

    def submit(self, worker: int, chunk: Chunk, attempt: int, output_schema: str | None = None) -> None:
        assert self._task is not None and self._requests is not None and self._results is not None
        invoke = Invoke(chunk, attempt, output_schema)
        dispatch = Dispatch(self._task.job_id, self._task_uri, worker, invoke, self._results.url, self._timeout_s)
        self._requests.send(dispatch.to_json())
        self._in_flight[worker] = (chunk.chunk_id, attempt)

    def scale(self, waiting: int) -> None:
        """The cap is the job's ``workers``; the consumers scale themselves (Lambda) or are as many as were started."""

    def wait(self, timeout: float) -> list[WorkerEvent]:
        """Reports that arrived within ``timeout`` seconds (SQS long polling, in whole seconds up to ``wait_s``)."""
        assert self._results is not None
        started = time.monotonic()
        poll_s = int(min(timeout, self._options.wait_s))
        events = self._events(self._results.receive(10, poll_s))
        left = timeout - (time.monotonic() - started)
        if not events and left > 0 and poll_s == 0:
            time.sleep(min(left, 0.2))  # a short poll found nothing: do not spin on the queue
        return events

    def kill(self, worker: int) -> None:
        """Abandon the slot's attempt (a remote function cannot be stopped); its late report, if any, is discarded."""
        self._in_flight[worker] = None

    def cold_starts(self) -> int:
        """Cold starts the workers reported (their first invocation after loading the model)."""
        return self._cold_starts

    def worker_starts(self) -> int:
        """Distinct worker processes that reported so far."""
        return len(self._remote_workers)

    def shutdown(self) -> None:
        """Nothing runs here; messages still on the queue are the coordinator's business (their reports are late)."""

    def _events(self, received: list[Received]) -> list[WorkerEvent]:
        assert self._results is not None and self._task is not None
        events: list[WorkerEvent] = []
        done: list[str] = []
        for message in received:
            try:
                result = parse_result(message.body)
            except MessageRefused as refused:
                _log.warning("deleted a message on the results queue that is not squall's: %s", refused)
                done.append(message.receipt)
                continue
            job_id = result.job_id if isinstance(result, Started) else result.reported.report.job_id
            if job_id != self._task.job_id and message.receive_count < FOREIGN_RECEIVES:
                self._results.hide(message.receipt, FOREIGN_HIDE_S)  # another coordinator's
                continue
            done.append(message.receipt)
            event = self._event(result) if job_id == self._task.job_id else None
            if event is not None:
                events.append(event)
        if done:
            self._results.delete(done)
        return events

    def _event(self, result: Started | Reply) -> WorkerEvent | None:
        if isinstance(result, Reply):
            return self._done(result)
        if self._in_flight.get(result.slot) == (result.chunk_id, result.attempt):
            return InvocationStarted(result.slot)
        return None  # an abandoned attempt that a consumer took late

    def _done(self, reply: Reply) -> InvocationDone:
        report = reply.reported.report
        if self._in_flight.get(reply.slot) == (report.chunk_id, report.attempt):
            self._in_flight[reply.slot] = None
        if report.init_s is not None:
            self._cold_starts += 1
        self._remote_workers.add(reply.worker)
        return InvocationDone(reply.slot, report)
