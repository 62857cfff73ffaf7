"""The AWS Lambda handler: ``squall.backends.sqs.lambda_handler.handler``, for an SQS event source mapping.

Each record of the event is one dispatch, run by the same
:class:`~.consumer.Consumer` as ``squall worker``. The consumer lives in this
module's globals, so the model stays loaded across the warm invocations of
one execution environment; the first invocation that loads it reports the
load (reading the job's task and the model) as its cold start: ``init_s`` in
its report, the Init Duration of the job log's REPORT line.

The answer lists the records that were not processed in
``batchItemFailures`` (the mapping needs ``FunctionResponseTypes:
[ReportBatchItemFailures]``): only those are delivered again, and a record
refused every time goes to the dead-letter queue after ``maxReceiveCount``.
A record whose invocation failed is *processed*: its report says so, and the
coordinator decides what happens next.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from squall.backends.sqs.consumer import Consumer
from squall.backends.sqs.envelope import Dispatch
from squall.errors import MessageRefused

_log = logging.getLogger("squall.lambda")
_consumer: Consumer | None = None


def handler(event: dict[str, Any], context: Any) -> dict[str, list[dict[str, str]]]:
    """Run every record of an SQS event; returns the ones to deliver again as ``batchItemFailures``."""
    consumer = _warm(context)
    failures: list[dict[str, str]] = []
    for record in event.get("Records", []):
        message_id = str(record.get("messageId", ""))
        try:
            reply = consumer.run(Dispatch.parse(str(record.get("body", ""))))
        except MessageRefused as refused:
            _log.error("refused message %s: %s", message_id, refused)
            failures.append({"itemIdentifier": message_id})
            continue
        except Exception as exc:  # the report could not be sent: run it again later rather than lose it
            _log.error("message %s: %s: %s; it will be delivered again", message_id, type(exc).__name__, exc)
            failures.append({"itemIdentifier": message_id})
            continue
        report = reply.reported.report
        if report.init_s is not None:
            _log.info("cold start: Init Duration %.1f ms (the model of job %s loaded)", report.init_s * 1000, report.job_id)
    return {"batchItemFailures": failures}


def _warm(context: Any) -> Consumer:
    """The execution environment's consumer, made on its first invocation."""
    global _consumer
    if _consumer is None:
        logging.basicConfig(level=os.environ.get("SQUALL_LOG_LEVEL", "INFO"))
        name = getattr(context, "log_stream_name", None) or f"lambda:{os.getpid()}"
        _consumer = Consumer(name=name)
    return _consumer
