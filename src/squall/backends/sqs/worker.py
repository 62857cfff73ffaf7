"""``squall worker --queue NAME``: long-running consumers of a request queue, on a VM, in a container or a pod.

``squall worker`` is a small supervisor: it starts ``--processes`` consumer
processes (``python -m squall.backends.sqs.worker``) and starts a fresh one
whenever one ends itself over an invocation's time limit (as Lambda resets an
execution environment after a timeout). Each consumer long-polls the queue
for one message at a time, runs it with a :class:`~.consumer.Consumer` (the
model stays warm between messages), sends the report, and only then deletes
the message. While an invocation runs, a heartbeat keeps the message hidden
from other consumers (it extends the visibility timeout every third of it),
so a long invocation is not delivered twice; if the consumer dies, the
heartbeat stops and the message reappears after at most one visibility
timeout, for another consumer to run (the coordinator's own timeout may have
retried it first: the late report is discarded). Consumers hold no job
state: SIGKILL at any moment loses nothing.

An invocation that runs past the dispatch's time limit cannot be stopped
inside its process (native code does not heed a thread), so the consumer
exits with :data:`TIME_LIMIT_EXIT` and the supervisor starts another; the
message reappears after its visibility timeout (the coordinator has retried
or split the chunk by then, so that run's report is a late one), and the
redrive policy ends it in the dead-letter queue if it keeps doing that.

A message it refuses (not a squall dispatch, or a job task it cannot read)
is released at once, logged with the reason, and left to the queue's redrive
policy: after ``maxReceiveCount`` receives SQS moves it to the dead-letter
queue, where ``squall dlq --queue NAME`` shows it.

SIGTERM (or Ctrl-C) lets each invocation in hand finish and report, then the
worker exits 0; a second one stops at once (the messages reappear later).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass

from squall.backends.sqs.consumer import Consumer
from squall.backends.sqs.envelope import Dispatch
from squall.backends.sqs.queues import Queue, Received
from squall.errors import MessageRefused

TIME_LIMIT_EXIT = 75
"""A consumer's exit code when an invocation ran past its time limit: the supervisor starts a fresh one."""
TIME_LIMIT_GRACE_S = 1.0
_log = logging.getLogger("squall.worker")


@dataclass(frozen=True)
class WorkerSettings:
    """How a worker polls: its queue, region, long-poll wait, visibility timeout, and when to stop by itself."""

    queue: str
    region: str | None = None
    wait_s: int = 20
    visibility_s: int = 60
    max_messages: int | None = None
    """Each consumer stops after this many messages (``None``: run until stopped)."""


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
        try:
            dispatch = Dispatch.parse(message.body)
            with _Heartbeat(self._queue, message.receipt, self._settings.visibility_s), _TimeLimit(dispatch.timeout_s):
                reply = self._consumer.run(dispatch)
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

    def __enter__(self) -> None:
        self._thread.start()

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _beat(self) -> None:
        while not self._done.wait(self._every):
            try:
                self._queue.hide(self._receipt, self._visibility_s)
            except Exception as exc:  # the queue is unreachable for a moment: the next beat tries again
                _log.warning("could not extend the visibility of a message in work: %s", exc)


class _TimeLimit:
    """Ends this process (exit :data:`TIME_LIMIT_EXIT`) if the block runs past ``seconds`` (plus a grace)."""

    def __init__(self, seconds: float | None) -> None:
        self._seconds = seconds
        self._done = threading.Event()

    def __enter__(self) -> None:
        if self._seconds is not None:
            threading.Thread(target=self._watch, name="squall-time-limit", daemon=True).start()

    def __exit__(self, *exc: object) -> None:
        self._done.set()

    def _watch(self) -> None:
        assert self._seconds is not None
        if not self._done.wait(self._seconds + TIME_LIMIT_GRACE_S):
            _log.error("the invocation ran past its %g s time limit: this consumer ends, a fresh one takes its place",
                       self._seconds)
            logging.shutdown()
            os._exit(TIME_LIMIT_EXIT)


def supervise(settings: WorkerSettings, processes: int = 1) -> int:
    """Run ``processes`` consumers until SIGTERM or Ctrl-C, replacing any that end over a time limit; returns
    0, or the exit code of a consumer that failed."""
    children = [_spawn(settings) for _ in range(processes)]
    stopping = threading.Event()

    def stop(signum: int, frame: object) -> None:
        if stopping.is_set():
            for child in children:
                child.kill()
            raise SystemExit(128 + signum)
        _log.warning("stopping after the messages in hand (signal %d); send it again to stop at once", signum)
        stopping.set()
        for child in children:
            child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    worst = 0
    while children:
        time.sleep(0.1)
        running = []
        for child in children:
            code = child.poll()
            if code is None:
                running.append(child)
            elif code == TIME_LIMIT_EXIT and not stopping.is_set():
                running.append(_spawn(settings))
            else:
                worst = worst or (0 if code in (0, TIME_LIMIT_EXIT) else code)
        children[:] = running  # in place: the signal handler signals this list
    return worst


def _spawn(settings: WorkerSettings) -> subprocess.Popen[bytes]:
    """A consumer process; it dies with this one (``PR_SET_PDEATHSIG``), so a killed worker leaves none behind."""
    env = {**os.environ, "SQUALL_PARENT_PID": str(os.getpid())}
    return subprocess.Popen([sys.executable, "-m", "squall.backends.sqs.worker", json.dumps(asdict(settings))], env=env)


def consume(settings: WorkerSettings) -> int:
    """One consumer process: serve until SIGTERM (the message in hand finishes first)."""
    from squall.runtime.parent_death import die_with_parent

    die_with_parent()
    worker = Worker(settings)

    def stop(signum: int, frame: object) -> None:
        if worker.stopping:
            raise SystemExit(128 + signum)
        worker.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the supervisor, which sends SIGTERM
    return worker.serve()


if __name__ == "__main__":
    logging.basicConfig(level=os.environ.get("SQUALL_LOG_LEVEL", "INFO"), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(consume(WorkerSettings(**json.loads(sys.argv[1]))))
