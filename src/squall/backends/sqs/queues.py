"""One SQS queue, through boto3: send, receive with long polling, delete, hide for longer or release.

The endpoint, region and credentials are boto3's own (``AWS_ENDPOINT_URL``,
``AWS_ENDPOINT_URL_SQS``, ``AWS_REGION``, ``AWS_ACCESS_KEY_ID``, an instance or
execution role): squall passes none of them, so none is ever written down.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from squall.errors import MissingDependency, QueueUnreachable

MAX_MESSAGE_BYTES = 256 * 1024
"""SQS refuses a message body over 256 KiB."""


@dataclass(frozen=True)
class Received:
    """One message as received: its body, the handle that deletes or hides it, and how often it was received."""

    message_id: str
    body: str
    receipt: str
    receive_count: int
    sent_at: float


class Queue:
    """One SQS queue, by URL."""

    def __init__(self, client: Any, url: str) -> None:
        self._client = client
        self.url = url

    @classmethod
    def named(cls, queue: str, region: str | None = None) -> Queue:
        """The queue ``queue`` names (a name, or a queue URL); raises :class:`QueueUnreachable` when there is none."""
        client = sqs_client(region)
        if queue.startswith(("https://", "http://")):
            return cls(client, queue)
        try:
            url = client.get_queue_url(QueueName=queue)["QueueUrl"]
        except Exception as exc:
            where = region or client.meta.region_name
            raise QueueUnreachable(
                f"no SQS queue {queue!r} can be reached in region {where} ({_short(exc)}); create it (`squall deploy aws "
                f"--stack {queue}` makes {queue}, {queue}-results and {queue}-dlq), or check the region and credentials"
            ) from None
        return cls(client, url)

    def send(self, body: str) -> None:
        """Put one message on the queue; raises :class:`QueueUnreachable` for a body over SQS's 256 KiB."""
        size = len(body.encode())
        if size > MAX_MESSAGE_BYTES:
            raise QueueUnreachable(f"a message of {size} bytes is over SQS's {MAX_MESSAGE_BYTES} byte limit ({self.url})")
        self._client.send_message(QueueUrl=self.url, MessageBody=body)

    def receive(self, most: int, wait_s: int, hide_s: int | None = None) -> list[Received]:
        """Up to ``most`` (1–10) messages, long-polling up to ``wait_s`` seconds; each stays hidden from other
        consumers for ``hide_s`` seconds (default the queue's visibility timeout)."""
        request: dict[str, Any] = {
            "QueueUrl": self.url, "MaxNumberOfMessages": most, "WaitTimeSeconds": wait_s,
            "MessageSystemAttributeNames": ["ApproximateReceiveCount", "SentTimestamp"],
        }
        if hide_s is not None:
            request["VisibilityTimeout"] = hide_s
        answer = self._client.receive_message(**request)
        return [_received(message) for message in answer.get("Messages", [])]

    def delete(self, receipts: Sequence[str]) -> None:
        """Delete the messages these receipt handles name (the ones received last with them)."""
        for start in range(0, len(receipts), 10):
            entries = [{"Id": str(i), "ReceiptHandle": r} for i, r in enumerate(receipts[start : start + 10])]
            self._client.delete_message_batch(QueueUrl=self.url, Entries=entries)

    def hide(self, receipt: str, seconds: int) -> None:
        """Keep a received message from other consumers for ``seconds`` more from now (0: release it at once)."""
        self._client.change_message_visibility(QueueUrl=self.url, ReceiptHandle=receipt, VisibilityTimeout=seconds)


def sqs_client(region: str | None = None) -> Any:
    """A boto3 SQS client in ``region`` (default boto3's own: ``$AWS_REGION``, ``$AWS_DEFAULT_REGION``, the config)."""
    try:
        import boto3
    except ImportError:
        raise MissingDependency("the sqs backend needs boto3: pip install 'squall[aws]'") from None
    region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    try:
        return boto3.client("sqs", region_name=region)
    except Exception as exc:
        raise QueueUnreachable(f"cannot make an SQS client ({_short(exc)}); set AWS_REGION or --sqs-region") from None


def _received(message: dict[str, Any]) -> Received:
    attributes = message.get("Attributes", {})
    return Received(
        message["MessageId"], message["Body"], message["ReceiptHandle"],
        int(attributes.get("ApproximateReceiveCount", 1)), int(attributes.get("SentTimestamp", 0)) / 1000.0,
    )


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
