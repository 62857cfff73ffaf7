"""The messages in a queue's SQS dead-letter queue, and why a worker refused each: ``squall dlq --queue NAME``.

SQS moves a message there after ``maxReceiveCount`` receives that did not
delete it: a message no worker can parse, or whose job task no worker can
read. Listing them receives each once and releases it at once, so they stay
where they are (their receive count grows, which a dead-letter queue ignores).
"""

from __future__ import annotations

from dataclasses import dataclass

from squall.backends.sqs.envelope import Dispatch
from squall.backends.sqs.options import DEAD_LETTER_SUFFIX, queue_name
from squall.backends.sqs.queues import Queue
from squall.backends.sqs.task_object import read_task
from squall.errors import MessageRefused

_LIST_HIDE_S = 30


@dataclass(frozen=True)
class RefusedMessage:
    """One dead-lettered message: its id, when it was first sent, what it is and why a worker refuses it."""

    message_id: str
    sent_at: float
    what: str
    reason: str
    body_head: str


def refused_messages(queue: str, region: str | None = None, most: int = 100) -> list[RefusedMessage]:
    """Up to ``most`` messages in the dead-letter queue of ``queue`` (``NAME-dlq``), each with the reason a worker
    here gives for refusing it; a message this worker would run says so (another worker lacked access)."""
    dead = Queue.named(queue_name(queue) + DEAD_LETTER_SUFFIX, region)
    found: dict[str, RefusedMessage] = {}
    receipts: list[str] = []
    while len(found) < most:
        batch = dead.receive(10, 0, _LIST_HIDE_S)
        if not batch:
            break
        for message in batch:
            receipts.append(message.receipt)
            found.setdefault(message.message_id, _explained(message.message_id, message.sent_at, message.body))
    for receipt in receipts:
        dead.hide(receipt, 0)
    return sorted(found.values(), key=lambda m: m.sent_at)[:most]


def _explained(message_id: str, sent_at: float, body: str) -> RefusedMessage:
    head = body[:120]
    try:
        dispatch = Dispatch.parse(body)
    except MessageRefused as refused:
        return RefusedMessage(message_id, sent_at, "not a squall dispatch", str(refused), head)
    try:
        read_task(dispatch.task, dispatch.job_id)
    except MessageRefused as refused:
        return RefusedMessage(message_id, sent_at, dispatch.describe(), str(refused), head)
    return RefusedMessage(
        message_id, sent_at, dispatch.describe(),
        "this machine can run it: the workers that refused it lacked access (see their logs); `squall redrive` the "
        "job's dead chunks once they have it", head,
    )
