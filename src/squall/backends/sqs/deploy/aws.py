"""Deploying and removing a deployment on AWS: the stack, then the trigger bucket's notification (and back)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from squall.backends.sqs.deploy.bucket_notification import (
    add_notification,
    remove_notification,
)
from squall.backends.sqs.deploy.settings import DeploySettings
from squall.backends.sqs.deploy.stack import (
    Progress,
    aws_session,
    delete_stack,
    deploy_stack,
    stack_outputs,
)
from squall.backends.sqs.deploy.template import template_json
from squall.errors import StackFailed, UsageError


def deploy(settings: DeploySettings, progress: Progress) -> dict[str, str]:
    """Create or update ``settings.stack`` and wire its trigger bucket; the stack's outputs (queue URLs...)."""
    if not settings.image:
        raise UsageError("give --image: the URI of the image built from Dockerfile.lambda and pushed to ECR "
                         "(see docs/aws.md); --dry-run prints the template without it")
    session = aws_session()
    with _aws_errors(f"deploy {settings.stack}"):
        before = _trigger_bucket(session, settings.stack)
        outputs = deploy_stack(session, settings.stack, template_json(settings), {"ImageUri": settings.image}, progress)
        trigger = settings.trigger_location()
        if before and (trigger is None or trigger.bucket != before):
            remove_notification(session, settings.stack, before)
            progress(f"s3://{before}: notification squall-{settings.stack} removed")
        if trigger is not None:
            add_notification(session, settings.stack, trigger, outputs["EventsQueueArn"])
            progress(f"s3://{trigger.bucket}: new objects under {trigger.key or '/'} notify {settings.stack}-events")
    return outputs


def undeploy(stack: str, progress: Progress) -> bool:
    """Remove deployment ``stack``: its bucket notification, then the stack; False if there was no such stack."""
    session = aws_session()
    with _aws_errors(f"delete {stack}"):
        bucket = _trigger_bucket(session, stack)
        if bucket:
            remove_notification(session, stack, bucket)
            progress(f"s3://{bucket}: notification squall-{stack} removed")
        return delete_stack(session, stack, progress)


def _trigger_bucket(session: Any, stack: str) -> str | None:
    """The bucket whose notification deployment ``stack`` set, if the stack exists and has one."""
    client = session.client("cloudformation")
    try:
        return stack_outputs(client, stack).get("TriggerBucket")
    except client.exceptions.ClientError:
        return None  # no such stack


@contextmanager
def _aws_errors(doing: str) -> Iterator[None]:
    """An error from AWS (refused, unreachable) as a :class:`StackFailed` that says what was being done."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (BotoCoreError, ClientError) as exc:
        raise StackFailed(f"cannot {doing}: {exc}") from None
