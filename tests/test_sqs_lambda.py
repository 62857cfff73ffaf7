"""The AWS Lambda handler, driven by real SQS messages received from moto, in the event shape AWS sends.

No Lambda runs here, so this test plays the event source mapping: it
receives batches from the request queue, wraps them as an SQS event, hands
each event to one of two long-lived processes that each play one execution
environment (the handler's module stays imported between events: warm; a new
process is cold), deletes the records the handler did not list in
``batchItemFailures`` and makes the listed ones visible again, as the mapping
does with ``ReportBatchItemFailures``.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.s3server import S3Server
from support.sqs import aws_environment, wait_until
from support.sqs_deployment import (
    Deployment,
    assert_predictions_equal_the_model,
    deploy,
    upload_inputs,
)

import squall
from squall.store import JobStore

ENVIRONMENTS, BATCH = 2, 3


@pytest.fixture
def deployment(s3: S3Server, bucket: str, tmp_path: Path, linear_model: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Deployment]:
    yield from deploy(s3, bucket, tmp_path, linear_model, monkeypatch)


class Environment:
    """One simulated execution environment: a process running ``support.lambda_environment``."""

    def __init__(self, name: str, s3: S3Server) -> None:
        self.name = name
        self.process = subprocess.Popen(
            [sys.executable, "-m", "support.lambda_environment", name], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            env={**os.environ, **aws_environment(s3)}, text=True,
        )
        self.invocations = 0

    def invoke(self, event: dict[str, Any]) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(event) + "\n")
        self.process.stdin.flush()
        self.invocations += 1
        answer: dict[str, Any] = json.loads(self.process.stdout.readline())
        return answer

    def close(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)


def sqs_event(messages: list[dict[str, Any]], arn: str) -> dict[str, Any]:
    """The event an SQS event source mapping hands a function for ``messages`` (as ReceiveMessage returned them)."""
    return {"Records": [
        {
            "messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
            "attributes": {name: str(value) for name, value in m.get("Attributes", {}).items()},
            "messageAttributes": {}, "md5OfBody": hashlib.md5(m["Body"].encode()).hexdigest(),
            "eventSource": "aws:sqs", "eventSourceARN": arn, "awsRegion": "us-east-1",
        }
        for m in messages
    ]}


def test_the_lambda_handler_runs_sqs_events_warm_and_cold_and_reports_only_bad_records_as_batch_failures(deployment, linear_model):
    queues, client = deployment.queues, deployment.queues.client
    queues.set_max_receives(2)
    frame = upload_inputs(deployment, "parquet")
    poison = client.send_message(QueueUrl=queues.url, MessageBody='{"kind": "not squall"}')["MessageId"]
    arn = client.get_queue_attributes(QueueUrl=queues.url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    outcome: dict[str, squall.JobResult] = {}
    # A time limit no cold start on a loaded machine reaches: an abandoned first attempt would hide its cold start.
    spec = deployment.spec("parquet", timeout=180)
    coordinator = threading.Thread(target=lambda: outcome.setdefault("result", squall.run(spec)))
    environments = [Environment(f"2026/11/29/[$LATEST]env{i}", deployment.s3) for i in range(ENVIRONMENTS)]
    failed: list[str] = []
    try:
        coordinator.start()
        turn = 0
        while coordinator.is_alive():
            messages = client.receive_message(
                QueueUrl=queues.url, MaxNumberOfMessages=BATCH, WaitTimeSeconds=1, VisibilityTimeout=30,
                MessageSystemAttributeNames=["All"],
            ).get("Messages", [])
            if not messages:
                continue
            answer = environments[turn % ENVIRONMENTS].invoke(sqs_event(messages, arn))
            turn += 1
            retry = {item["itemIdentifier"] for item in answer["batchItemFailures"]}
            failed.extend(retry)
            for message in messages:
                if message["MessageId"] in retry:  # the mapping leaves it; visible again now rather than in 30 s
                    client.change_message_visibility(QueueUrl=queues.url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0)
                else:
                    client.delete_message(QueueUrl=queues.url, ReceiptHandle=message["ReceiptHandle"])
        coordinator.join()
    finally:
        for environment in environments:
            environment.close()
    result = outcome["result"]
    assert (result.state, result.rows_out) == ("SUCCEEDED", len(frame))
    assert_predictions_equal_the_model(deployment, frame, linear_model)
    assert set(failed) == {poison}, "a record other than the bad one was reported as a batch failure"
    assert all(environment.invocations >= 2 for environment in environments), "an environment never ran warm"
    with JobStore.at(None) as store:
        records = store.invocations(result.job_id)
    cold = [record for record in records if record.cold_start]
    assert len(cold) == ENVIRONMENTS, "each environment loads the model once, on its first invocation"
    assert all(record.init_s and record.init_s > 0 for record in cold)
    assert len(records) - len(cold) >= ENVIRONMENTS, "no invocation found its environment warm"
    # The mapping polls on after the job: the bad record, received maxReceiveCount times, moves to the dead-letter queue.
    wait_until(lambda: poll_once(client, queues.url) or poison in dead_letter_ids(client, queues.dlq_url),
               "the bad record to reach the dead-letter queue", timeout=60)


def poll_once(client: Any, url: str) -> bool:
    """Receive what is visible and release it at once, as a poller that hands it to a function that fails it."""
    for message in client.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        client.change_message_visibility(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0)
    return False


def dead_letter_ids(client: Any, url: str) -> list[str]:
    return [m["MessageId"] for m in client.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0).get("Messages", [])]
