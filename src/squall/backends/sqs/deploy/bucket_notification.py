"""The trigger bucket's notification to a deployment's events queue: set after the stack is up, removed before it goes.

CloudFormation sets notifications only on buckets a stack creates, and the
input bucket is the user's, so ``squall deploy aws --trigger-prefix`` adds one
queue notification (id ``squall-NAME``: ``s3:ObjectCreated:*`` under the prefix
→ ``NAME-events``) to the bucket's existing configuration, keeping every other
notification, and ``--delete`` takes it out the same way. S3 checks that it
may send to the queue by sending an ``s3:TestEvent``, which the stack's queue
policy allows and the ``sqs-events`` trigger ignores.
"""

from __future__ import annotations

from typing import Any

from squall.backends.sqs.deploy.settings import S3Location

_KINDS = ("QueueConfigurations", "TopicConfigurations", "LambdaFunctionConfigurations", "EventBridgeConfiguration")


def notification_id(stack: str) -> str:
    """The id of deployment ``stack``'s notification in the bucket's configuration."""
    return f"squall-{stack}"


def add_notification(session: Any, stack: str, prefix: S3Location, queue_arn: str) -> None:
    """Notify ``queue_arn`` of every object created under ``prefix``; other notifications are kept."""
    client = session.client("s3")
    kept = _without(_current(client, prefix.bucket), notification_id(stack))
    ours = {"Id": notification_id(stack), "QueueArn": queue_arn, "Events": ["s3:ObjectCreated:*"],
            "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": prefix.key}]}}}
    kept["QueueConfigurations"] = [*kept.get("QueueConfigurations", []), ours]
    client.put_bucket_notification_configuration(Bucket=prefix.bucket, NotificationConfiguration=kept)


def remove_notification(session: Any, stack: str, bucket: str) -> None:
    """Take deployment ``stack``'s notification out of ``bucket``'s configuration (nothing if it has none)."""
    client = session.client("s3")
    current = _current(client, bucket)
    kept = _without(current, notification_id(stack))
    if kept != current:
        client.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=kept)


def _current(client: Any, bucket: str) -> dict[str, Any]:
    found = client.get_bucket_notification_configuration(Bucket=bucket)
    return {kind: found[kind] for kind in _KINDS if kind in found}


def _without(configuration: dict[str, Any], notification: str) -> dict[str, Any]:
    kept = dict(configuration)
    queues = [item for item in configuration.get("QueueConfigurations", []) if item.get("Id") != notification]
    if queues:
        kept["QueueConfigurations"] = queues
    else:
        kept.pop("QueueConfigurations", None)
    return kept
