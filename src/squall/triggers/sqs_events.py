"""The ``sqs-events`` trigger: jobs from the events an SQS queue receives (``NAME-events`` of ``squall deploy aws``).

Two kinds of message start jobs:

- an S3 event notification (``{"Records": [...]}``, ``eventSource`` ``aws:s3``):
  one job per ``ObjectCreated`` record, from the rule's template filled for
  that object as a watch fills it for a file (``{file}``, ``{stem}``... ; the
  object is the input unless the template names one);
- an EventBridge scheduled event (``"detail-type": "Scheduled Event"``): one
  job from the rule's ``schedule_spec`` template, filled for the event's time
  as a schedule fills it (``{date}``, ``{run_time}``...).

S3's ``s3:TestEvent`` (sent when a notification is set) is ignored, and so
are other S3 events (an object removed); a message that is neither is logged
and deleted, so that it cannot come back forever. A message is deleted only
after each job it names is recorded in the seen record and handed to the
service's queue (:mod:`squall.triggers.seen`): a delivery cut short comes
back after the visibility timeout and finds its keys claimed (nothing runs
twice), and a job claimed but not handed over is handed over on restart.
So each object (its URL) and each scheduled time runs once, however often
SQS delivers it.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from fnmatch import fnmatch
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

from pydantic import Field, model_validator

from squall.errors import MissingDependency, SpecError, UsageError
from squall.spec import load_spec_file
from squall.triggers.handover import Runner, hand_over, no_report, recover
from squall.triggers.rules import TemplateRule
from squall.triggers.seen import SeenRecord
from squall.triggers.service import Submit
from squall.triggers.template import file_job_id, file_spec, run_job_id, run_spec

log = logging.getLogger("squall.triggers")


class QueueEventsRule(TemplateRule):
    """Jobs from the S3 notifications and scheduled events on one SQS queue (``[[triggers]] kind = "sqs-events"``)."""

    queue: str = Field(description="The queue's name (`NAME-events`) or URL.")
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$",
                             description="Name of the rule in the seen record and in job ids; default the queue's name.")
    pattern: str = Field("*", description="Glob an object's name must match to start a job (e.g. `*.parquet`).")
    schedule_spec: str | None = Field(None, description="Spec template file for scheduled events; without it they are ignored.")
    schedule_template: dict[str, Any] = Field(default_factory=dict, description="Inline values for scheduled events; override `schedule_spec`.")
    wait_s: int = Field(10, ge=0, le=20, description="Seconds one receive waits for a message (SQS long polling).")
    visibility_s: int = Field(120, ge=1, description="Seconds a received message stays hidden while its jobs are recorded.")

    @model_validator(mode="after")
    def _read_schedule_spec(self) -> QueueEventsRule:
        if self.schedule_spec is not None:
            object.__setattr__(self, "schedule_template", {**load_spec_file(self.schedule_spec), **self.schedule_template})
            object.__setattr__(self, "schedule_spec", None)
        return self

    def rule_id(self) -> str:
        """Stable id of this rule in the seen record and in job ids."""
        return self.name or self.queue.rstrip("/").rsplit("/", 1)[-1]


class QueueEvents:
    """One job per created object and per scheduled event that arrives on an SQS queue."""

    Rule = QueueEventsRule
    section = "triggers"  # no table of its own: its rules are `[[triggers]]` tables with `kind = "sqs-events"`

    def check(self, rule: QueueEventsRule) -> None:
        """Refuse templates that would not make valid specs, and a queue that does not exist."""
        now = datetime.now(timezone.utc)
        file_spec(rule.template, "s3://bucket/example.parquet", now, "template-check")
        if rule.schedule_template:
            run_spec(rule.schedule_template, now, "template-check")
        queue_url(_sqs_client(), rule.queue)

    def loop(self, rule: QueueEventsRule, submit: Submit, state_dir: Path, stop: threading.Event) -> Callable[[], None]:
        """Poll the queue until ``stop``; an error is logged and the loop starts again (recovering) after a pause."""

        def consume() -> None:
            seen = SeenRecord(state_dir)
            try:
                trigger = QueueEventsTrigger(rule, _sqs_client(), seen, _runner(submit))
                trigger.recover()
                while not stop.is_set():
                    trigger.poll()
            finally:
                seen.close()

        def retrying() -> None:
            while not stop.is_set():
                try:
                    consume()
                except Exception:
                    log.exception("sqs-events %s failed; retrying in %g s", rule.queue, _PAUSE_S)
                    stop.wait(_PAUSE_S)

        return retrying

    def describe(self, rule: QueueEventsRule) -> str:
        """``sqs-events QUEUE``."""
        return f"sqs-events {rule.queue}"


QUEUE_EVENTS = QueueEvents()
_PAUSE_S = 5.0


class QueueEventsTrigger:
    """One rule on one queue: each poll receives messages, claims and hands over their jobs, then deletes them."""

    def __init__(self, rule: QueueEventsRule, sqs: Any, seen: SeenRecord, runner: Runner) -> None:
        self.rule, self.sqs, self.seen, self.runner = rule, sqs, seen, runner
        self.rule_id = rule.rule_id()
        self.url = queue_url(sqs, rule.queue)

    def recover(self) -> None:
        """Hand over again every job claimed before a crash but maybe never handed over."""
        recover(self.seen, self.rule_id, self.runner, no_report, self.rule.template)
        recover(self.seen, self.schedule_rule_id(), self.runner, no_report, self.rule.schedule_template)

    def schedule_rule_id(self) -> str:
        """The rule's id in the seen record for scheduled events (kept apart from objects' keys)."""
        return self.rule_id + ":schedule"

    def poll(self) -> int:
        """Receive once (waiting up to ``wait_s``); start the jobs of each message, then delete it. Returns how many
        messages were handled."""
        found = self.sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10, WaitTimeSeconds=self.rule.wait_s,
                                         VisibilityTimeout=self.rule.visibility_s).get("Messages", [])
        for message in found:
            self.handle(message["Body"], message.get("MessageId", "?"))
            self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=message["ReceiptHandle"])
        return len(found)

    def handle(self, body: str, message_id: str) -> None:
        """Start the jobs ``body`` asks for (none for a test event, an event of another kind, or a bad message)."""
        try:
            event = json.loads(body)
        except ValueError:
            event = None
        if not isinstance(event, dict):
            log.error("sqs-events %s: message %s is not JSON; deleted", self.rule.queue, message_id)
        elif event.get("Event") == "s3:TestEvent":
            return
        elif isinstance(event.get("Records"), list):
            for record in event["Records"]:
                self._refusing_bad_specs(self._object_created, record, message_id)
        elif event.get("detail-type") == "Scheduled Event":
            self._refusing_bad_specs(self._scheduled, event, message_id)
        else:
            log.error("sqs-events %s: message %s is neither an S3 notification nor a scheduled event; deleted",
                      self.rule.queue, message_id)

    def _refusing_bad_specs(self, start: Callable[[Any, str], None], event: Any, message_id: str) -> None:
        """``start(event)``; a template that makes no valid spec for this event is logged, and the event skipped
        (a message that can never start its job must not come back forever)."""
        try:
            start(event, message_id)
        except SpecError as exc:
            log.error("sqs-events %s: message %s starts no job: %s", self.rule.queue, message_id, exc)

    def _object_created(self, record: Any, message_id: str) -> None:
        try:
            if record["eventSource"] != "aws:s3" or not str(record["eventName"]).startswith("ObjectCreated:"):
                return
            bucket, key = record["s3"]["bucket"]["name"], unquote_plus(record["s3"]["object"]["key"])
            arrived = _timestamp(record["eventTime"])
        except (KeyError, TypeError, ValueError) as exc:
            log.error("sqs-events %s: message %s holds an S3 record without %s; skipped", self.rule.queue, message_id, exc)
            return
        if not fnmatch(key.rsplit("/", 1)[-1], self.rule.pattern):
            return
        uri = f"s3://{bucket}/{key}"
        job_id = file_job_id(self.rule_id, uri)
        spec = file_spec(self.rule.template, uri, arrived, job_id)
        size, etag = record["s3"]["object"].get("size"), record["s3"]["object"].get("eTag")
        if self.seen.claim(self.rule_id, uri, job_id, spec.to_json(), size, None, etag):
            hand_over(self.seen, self.rule_id, uri, job_id, spec, self.runner, no_report)

    def _scheduled(self, event: dict[str, Any], message_id: str) -> None:
        if not self.rule.schedule_template:
            log.warning("sqs-events %s: scheduled event %s ignored: the rule has no schedule_spec", self.rule.queue, message_id)
            return
        try:
            run_time = _timestamp(event["time"])
        except (KeyError, TypeError, ValueError):
            log.error("sqs-events %s: scheduled event %s has no valid `time`; skipped", self.rule.queue, message_id)
            return
        job_id = run_job_id(self.rule_id, run_time)
        spec = run_spec(self.rule.schedule_template, run_time, job_id)
        key = run_time.isoformat()
        if self.seen.claim(self.schedule_rule_id(), key, job_id, spec.to_json()):
            hand_over(self.seen, self.schedule_rule_id(), key, job_id, spec, self.runner, no_report)


def queue_url(sqs: Any, queue: str) -> str:
    """The URL of ``queue`` (a name or a URL); a UsageError if there is no such queue."""
    if queue.startswith(("https://", "http://")):
        return queue
    try:
        return str(sqs.get_queue_url(QueueName=queue)["QueueUrl"])
    except sqs.exceptions.QueueDoesNotExist:
        raise UsageError(f"sqs-events: no queue {queue!r} in this account and region; "
                         "`squall deploy aws --stack NAME` creates NAME-events") from None


def _sqs_client() -> Any:
    """An SQS client; boto3 reads credentials, region and ``AWS_ENDPOINT_URL`` from the environment."""
    try:
        import boto3
    except ImportError:
        raise MissingDependency("the sqs-events trigger needs boto3: pip install 'squall[aws]'") from None
    return boto3.client("sqs")


def _timestamp(text: str) -> datetime:
    return datetime.fromisoformat(str(text).replace("Z", "+00:00")).astimezone(timezone.utc)


def _runner(submit: Submit) -> Runner:
    def run(spec: Any) -> None:
        submit(spec, source="sqs-events")

    return run

