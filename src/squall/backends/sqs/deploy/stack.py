"""Creating, updating and deleting a deployment's CloudFormation stack with boto3, and waiting for it.

boto3 finds credentials and the region the way the AWS CLI does (environment,
``AWS_PROFILE``, instance or container role) and honours ``AWS_ENDPOINT_URL``
(``AWS_ENDPOINT_URL_CLOUDFORMATION``); squall never reads, stores or prints a
credential. Each stack event is handed to ``progress`` as it happens.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from squall.errors import MissingDependency, StackFailed, UsageError

Progress = Callable[[str], None]
WAIT_LIMIT_S = 3600.0
_NO_CHANGE = "No updates are to be performed"


def aws_session() -> Any:
    """A boto3 session with credentials and a region, or a UsageError naming what to set."""
    try:
        import boto3
    except ImportError:
        raise MissingDependency("squall deploy aws needs boto3: pip install 'squall[aws]'") from None
    from botocore.exceptions import BotoCoreError

    try:
        session = boto3.Session()
        credentials = session.get_credentials()
    except BotoCoreError as exc:  # a profile named but not there, a credentials file that does not parse
        raise UsageError(f"cannot read AWS credentials: {exc}; fix AWS_PROFILE or your AWS config files") from None
    if credentials is None:
        raise UsageError("no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), "
                         "or run where an IAM role is attached; --dry-run prints the template without them")
    if not session.region_name:
        raise UsageError("no AWS region: set AWS_REGION (or AWS_DEFAULT_REGION, or a region in your AWS profile)")
    return session


def deploy_stack(session: Any, name: str, body: str, parameters: dict[str, str], progress: Progress,
                 poll_s: float = 2.0) -> dict[str, str]:
    """Create stack ``name`` from template ``body``, or update it if it exists; wait until it is done.
    Returns the stack's outputs; raises :class:`StackFailed` with CloudFormation's reasons if it rolled back."""
    client = session.client("cloudformation")
    given = [{"ParameterKey": key, "ParameterValue": value} for key, value in parameters.items()]
    arguments = {"StackName": name, "TemplateBody": body, "Parameters": given, "Capabilities": ["CAPABILITY_IAM"]}
    status = _status(client, name)
    if status == "ROLLBACK_COMPLETE":
        raise UsageError(f"stack {name} failed to create before and cannot be updated: "
                         f"`squall deploy aws --stack {name} --delete`, then deploy again")
    since = _last_event_time(client, name) if status else 0.0
    if status is None:
        progress(f"creating stack {name}")
        client.create_stack(**arguments)
    else:
        progress(f"updating stack {name} ({status})")
        try:
            client.update_stack(**arguments)
        except client.exceptions.ClientError as exc:
            if _NO_CHANGE not in str(exc):
                raise StackFailed(f"cannot update stack {name}: {exc}") from None
            progress("no changes")
            return stack_outputs(client, name)
    final = _wait(client, name, since, progress, poll_s)
    if final not in ("CREATE_COMPLETE", "UPDATE_COMPLETE"):
        raise StackFailed(f"stack {name} ended {final}: {'; '.join(_failures(client, name, since)) or 'see its events'}")
    return stack_outputs(client, name)


def delete_stack(session: Any, name: str, progress: Progress, poll_s: float = 2.0) -> bool:
    """Delete stack ``name`` and wait until it is gone; False if there was no such stack."""
    client = session.client("cloudformation")
    if _status(client, name) is None:
        return False
    since = _last_event_time(client, name)
    progress(f"deleting stack {name}")
    client.delete_stack(StackName=name)
    final = _wait(client, name, since, progress, poll_s)
    if final not in (None, "DELETE_COMPLETE"):
        raise StackFailed(f"stack {name} ended {final}: {'; '.join(_failures(client, name, since)) or 'see its events'}")
    return True


def stack_outputs(client: Any, name: str) -> dict[str, str]:
    """The outputs of stack ``name`` by key."""
    stack = client.describe_stacks(StackName=name)["Stacks"][0]
    return {item["OutputKey"]: item["OutputValue"] for item in stack.get("Outputs", [])}


def _status(client: Any, name: str) -> str | None:
    """The stack's status, or None when there is none (never made, or deleted)."""
    try:
        stacks = client.describe_stacks(StackName=name)["Stacks"]
    except client.exceptions.ClientError as exc:
        if "does not exist" in str(exc):
            return None
        raise
    status = stacks[0]["StackStatus"] if stacks else None
    return None if status == "DELETE_COMPLETE" else status


def _wait(client: Any, name: str, since: float, progress: Progress, poll_s: float) -> str | None:
    """Poll until the stack is no longer in progress, handing each new event to ``progress``; its final status."""
    deadline = time.monotonic() + WAIT_LIMIT_S
    shown: set[str] = set()
    while True:
        status = _status(client, name)
        for event in _events(client, name, since) if status else []:
            if event["EventId"] not in shown:
                shown.add(event["EventId"])
                reason = event.get("ResourceStatusReason")
                progress(f"{event['LogicalResourceId']} {event['ResourceStatus']}" + (f": {reason}" if reason else ""))
        if status is None or not status.endswith("_IN_PROGRESS"):
            return status
        if time.monotonic() > deadline:
            raise StackFailed(f"stack {name} still {status} after {WAIT_LIMIT_S:g} s; see it in the CloudFormation console")
        time.sleep(poll_s)


def _events(client: Any, name: str, since: float) -> list[Any]:
    """The stack's events after ``since`` (a timestamp), oldest first."""
    events = client.describe_stack_events(StackName=name)["StackEvents"]
    return sorted((e for e in events if e["Timestamp"].timestamp() > since), key=lambda e: e["Timestamp"])


def _last_event_time(client: Any, name: str) -> float:
    events = client.describe_stack_events(StackName=name)["StackEvents"]
    return max((e["Timestamp"].timestamp() for e in events), default=0.0)


def _failures(client: Any, name: str, since: float) -> list[str]:
    try:
        events = _events(client, name, since)
    except client.exceptions.ClientError:
        return []
    return [f"{e['LogicalResourceId']}: {e['ResourceStatusReason']}" for e in events
            if e["ResourceStatus"].endswith("_FAILED") and e.get("ResourceStatusReason")]
