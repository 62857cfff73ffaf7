"""SQS on the loopback moto server: the three queues of a deployment, and real ``squall worker`` processes on them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from support.cli import SQUALL
from support.s3server import CREDENTIALS, S3Server


def aws_environment(server: S3Server) -> dict[str, str]:
    """What a process needs to reach SQS and S3 on the loopback server (boto3 reads these itself)."""
    return {**CREDENTIALS, "AWS_ENDPOINT_URL": server.endpoint}


@dataclass
class Queues:
    """A deployment's queues: requests ``name`` (redriven to ``name-dlq`` after ``max_receives``), ``name-results``."""

    name: str
    client: Any
    url: str
    results_url: str
    dlq_url: str

    def depth(self, url: str) -> int:
        """Messages in the queue, visible or in flight."""
        attributes = self.client.get_queue_attributes(
            QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])

    def set_max_receives(self, count: int) -> None:
        """Receives of a message before SQS moves it to the dead-letter queue (the redrive policy's maxReceiveCount)."""
        arn = self.client.get_queue_attributes(QueueUrl=self.dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        redrive = json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": str(count)})
        self.client.set_queue_attributes(QueueUrl=self.url, Attributes={"RedrivePolicy": redrive})

    def dead_bodies(self) -> list[str]:
        """Bodies of the messages in the dead-letter queue (received and released again)."""
        answer = self.client.receive_message(QueueUrl=self.dlq_url, MaxNumberOfMessages=10, VisibilityTimeout=0)
        return [message["Body"] for message in answer.get("Messages", [])]


def make_queues(server: S3Server, name: str, max_receives: int = 3, visibility_s: int = 30) -> Queues:
    """Create the three queues of deployment ``name`` on the loopback server."""
    client = boto3.client("sqs", endpoint_url=server.endpoint, region_name=CREDENTIALS["AWS_DEFAULT_REGION"])
    dlq_url = client.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    dlq_arn = client.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receives)})
    url = client.create_queue(
        QueueName=name, Attributes={"RedrivePolicy": redrive, "VisibilityTimeout": str(visibility_s)}
    )["QueueUrl"]
    results_url = client.create_queue(QueueName=f"{name}-results")["QueueUrl"]
    return Queues(name, client, url, results_url, dlq_url)


@dataclass
class WorkerPool:
    """Real ``squall worker`` processes on one queue, each logging to its own file; a replaced one gets a new file."""

    queue: str
    folder: Path
    environment: dict[str, str]
    args: tuple[str, ...] = ("--wait-s", "1", "--visibility-s", "10")
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)
    started: int = 0

    def start(self, count: int = 1) -> None:
        for _ in range(count):
            self.processes.append(self._launch())
            self.logs.append(self.folder / f"worker-{self.started - 1}.log")

    def replace(self, index: int) -> None:
        """Start a fresh worker in place of worker ``index`` (which must have ended)."""
        self.processes[index] = self._launch()
        self.logs[index] = self.folder / f"worker-{self.started - 1}.log"

    def _launch(self) -> subprocess.Popen[bytes]:
        log = self.folder / f"worker-{self.started}.log"
        self.started += 1
        with open(log, "wb") as handle:
            return subprocess.Popen(
                [*SQUALL, "worker", "--queue", self.queue, *self.args], stdout=handle, stderr=subprocess.STDOUT,
                env={**os.environ, **self.environment},
            )

    def log(self, index: int) -> str:
        return self.logs[index].read_text(errors="replace")

    def every_log(self) -> str:
        """Every worker's log so far, replaced ones included."""
        return "".join(path.read_text(errors="replace") for path in sorted(self.folder.glob("worker-*.log")))

    def in_flight(self, index: int) -> bool:
        """Whether worker ``index`` has received a message it has not finished (nor refused)."""
        text = self.log(index)
        return text.count("received message") > text.count("finished message") + text.count("refused message")

    def kill_when_in_flight(self, index: int, deadline_s: float = 60.0) -> bool:
        """SIGKILL worker ``index`` as soon as it holds a message; returns whether it still held one after the kill."""
        process = self.processes[index]
        deadline = time.monotonic() + deadline_s
        while not self.in_flight(index):
            if time.monotonic() > deadline or process.poll() is not None:
                return False
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        return self.in_flight(index)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                process.wait(timeout=10)


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    """Poll ``condition`` until it holds, under a deadline."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
