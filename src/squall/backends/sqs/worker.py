"""``squall worker --queue NAME``: a long-running consumer of a request queue, on a VM, in a container or a pod.

It long-polls the queue for one message at a time, runs it with a
:class:`~.consumer.Consumer` (the model stays warm between messages), sends
the report, and only then deletes the message. While an invocation runs, a
heartbeat keeps the message hidden from other consumers (it extends the
visibility timeout every third of it), so a long invocation is not delivered
twice; if the worker dies, the heartbeat stops and the message reappears
after at most one visibility timeout, for another worker to run (the
coordinator's own timeout may have retried it first: the late report is
discarded). The worker holds no job state: SIGKILL at any moment loses
nothing.

A message it refuses (not a squall dispatch, or a job task it cannot read)
is released at once, logged with the reason, and left to the queue's redrive
policy: after ``maxReceiveCount`` receives SQS moves it to the dead-letter
queue, where ``squall dlq --queue NAME`` shows it.

SIGTERM (or Ctrl-C) lets the invocation in hand finish and report, then the
worker exits 0; a second one exits at once (the message reappears later).
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Self
from dataclasses import dataclass

from squall.backends.sqs.consumer import Consumer
from squall.backends.sqs.queues import Queue, Received
from squall.errors import MessageRefused

_log = logging.getLogger("squall.worker")


@dataclass(frozen=True)
class WorkerSettings:
    """How a worker polls: its queue, region, long-poll wait, visibility timeout, and when to stop by itself."""

    queue: str
    region: str | None = None
    wait_s: int = 20
    visibility_s: int = 60
    max_messages: int | None = None
    """Stop after this many messages (``None``: run until stopped)."""


class Worker:
    """One consumer of a request queue (see the module docstring)."""

    def __init__(self, settings: WorkerSettings) -> None:
        self._settings = settings
        self._queue = Queue.named(settings.queue, settings.region)
        self._consumer = Consumer(region=settings.region)
        self._stop = threading.Event()
        self.handled = 0

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` was called."""
        return self._stop.is_set()

    def stop(self) -> None:
        """Finish the message in hand, then return from :meth:`serve`."""
        self._stop.set()

    def serve(self) -> int:
        """Consume messages until stopped (or ``max_messages``); returns the exit code."""
        limit = self._settings.max_messages
        while not self._stop.is_set() and (limit is None or self.handled < limit):
            for message in self._queue.receive(1, self._settings.wait_s, self._settings.visibility_s):
                self._handle(message)
                self.handled += 1
        return 0

    def _handle(self, message: Received) -> None:
        _log.info("received message %s (received %d times)", message.message_id, message.receive_count)
        with _Heartbeat(self._queue, message.receipt, self._settings.visibility_s):
            try:
                reply = self._consumer.run(message.body)
            except MessageRefused as refused:
                _log.error("refused message %s (received %d times): %s", message.message_id, message.receive_count, refused)
                self._queue.hide(message.receipt, 0)  # back at once: the redrive policy moves it to the dead-letter queue
                return
        self._queue.delete([message.receipt])
        report = reply.reported.report
        _log.info("finished message %s: job %s chunk %d attempt %d, %s, %d rows in %.3f s", message.message_id,
                  report.job_id, report.chunk_id, report.attempt, report.outcome, report.rows_in, report.duration_s)


class _Heartbeat:
    """Keeps a received message hidden while it is worked on: every third of ``visibility_s``, for ``visibility_s`` more."""

    def __init__(self, queue: Queue, receipt: str, visibility_s: int) -> None:
        self._queue, self._receipt, self._every = queue, receipt, max(1.0, visibility_s / 3)
        self._visibility_s = visibility_s
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="squall-visibility", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _beat(self) -> None:
        while not self._done.wait(self._every):
            try:
                self._queue.hide(self._receipt, self._visibility_s)
            except Exception as exc:  # the queue is unreachable for a moment: the next beat tries again
                _log.warning("could not extend the visibility of a message in work: %s", exc)


def run_worker(settings: WorkerSettings) -> int:
    """Serve ``settings.queue`` until SIGTERM or Ctrl-C (the message in hand finishes); returns the exit code."""
    worker = Worker(settings)

    def stop(signum: int, frame: object) -> None:
        if worker.stopping:
            raise SystemExit(128 + signum)
        _log.warning("stopping after the message in hand (signal %d); send it again to stop at once", signum)
        worker.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    return worker.serve()
