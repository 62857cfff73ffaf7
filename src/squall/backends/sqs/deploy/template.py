"""The CloudFormation template of a deployment: one stack, built as plain data from :class:`DeploySettings`.

Resources (logical ids in brackets):

- the function [``Function``]: the container image built from ``Dockerfile.lambda``
  (parameter ``ImageUri``), the deployment's memory and timeout, its log group
  [``LogGroup``];
- the queues: requests ``NAME`` [``RequestQueue``] with a redrive policy to
  ``NAME-dlq`` [``DeadLetterQueue``] after ``max_receive_count`` receives, its
  visibility timeout six times the function's; results ``NAME-results``
  [``ResultsQueue``]; events ``NAME-events`` [``EventsQueue``], read by ``squall
  serve``'s ``sqs-events`` trigger;
- the event source mapping [``RequestSource``]: one message per invocation,
  ``ScalingConfig.MaximumConcurrency`` the concurrency cap, partial batch
  failures reported (``ReportBatchItemFailures``);
- the function's role [``FunctionRole``], least privilege: read the models and
  the input prefix, read/write/delete under the output prefix (where the job's
  task and parts go), list the buckets only under those prefixes, consume the
  request queue, send to the results queue, write its own log group;
- with a trigger prefix, the events queue's policy lets that bucket send (the
  bucket's notification itself is set after the stack is up, see
  :mod:`squall.backends.sqs.deploy.bucket_notification`: CloudFormation sets
  notifications only on buckets a stack creates); with a schedule, an
  EventBridge rule [``Schedule``] sends to the events queue, and the policy lets it.

Nothing in the template is a credential: the function gets its permissions
from its role.
"""

from __future__ import annotations

import json
from typing import Any

from squall.backends.sqs.deploy.settings import DeploySettings

Template = dict[str, Any]
_DESCRIPTION = "squall workers as AWS Lambda functions fed by SQS (squall deploy aws)"


def stack_template(settings: DeploySettings) -> Template:
    """The whole template for ``settings``."""
    resources: dict[str, Any] = {
        **_queues(settings),
        "LogGroup": {"Type": "AWS::Logs::LogGroup", "Properties": {
            "LogGroupName": f"/aws/lambda/{settings.stack}", "RetentionInDays": settings.log_retention_days}},
        "FunctionRole": _role(settings),
        "Function": _function(settings),
        "RequestSource": _event_source(settings),
        **_event_senders(settings),
    }
    image: dict[str, Any] = {"Type": "String", "Description": "Image URI (ECR) of the image built from Dockerfile.lambda"}
    if settings.image:
        image["Default"] = settings.image
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": _DESCRIPTION,
        "Parameters": {"ImageUri": image},
        "Resources": resources,
        "Outputs": _outputs(settings),
    }


def template_json(settings: DeploySettings) -> str:
    """The template as the JSON document CloudFormation takes."""
    return json.dumps(stack_template(settings), indent=2)


def _queues(settings: DeploySettings) -> dict[str, Any]:
    names = settings.queue_names()
    return {
        "DeadLetterQueue": _queue(names["dlq"], MessageRetentionPeriod=1_209_600),
        "RequestQueue": _queue(
            names["requests"], VisibilityTimeout=settings.visibility_timeout(),
            RedrivePolicy={"deadLetterTargetArn": {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]},
                           "maxReceiveCount": settings.max_receive_count},
        ),
        "ResultsQueue": _queue(names["results"]),
        "EventsQueue": _queue(names["events"]),
    }


def _queue(name: str, **properties: Any) -> dict[str, Any]:
    return {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": name, **properties}}


def _function(settings: DeploySettings) -> dict[str, Any]:
    return {
        "Type": "AWS::Lambda::Function",
        "DependsOn": ["LogGroup"],
        "Properties": {
            "FunctionName": settings.stack,
            "PackageType": "Image",
            "Code": {"ImageUri": {"Ref": "ImageUri"}},
            "Role": {"Fn::GetAtt": ["FunctionRole", "Arn"]},
            "MemorySize": settings.memory,
            "Timeout": settings.timeout,
            "Architectures": [settings.architecture],
        },
    }


def _event_source(settings: DeploySettings) -> dict[str, Any]:
    return {
        "Type": "AWS::Lambda::EventSourceMapping",
        "Properties": {
            "EventSourceArn": {"Fn::GetAtt": ["RequestQueue", "Arn"]},
            "FunctionName": {"Ref": "Function"},
            "BatchSize": 1,  # one message is one chunk: a whole invocation's work
            "ScalingConfig": {"MaximumConcurrency": settings.max_concurrency},
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
        },
    }


def _role(settings: DeploySettings) -> dict[str, Any]:
    return {
        "Type": "AWS::IAM::Role",
        "Properties": {
            "AssumeRolePolicyDocument": {"Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]},
            "Policies": [{"PolicyName": "squall-worker", "PolicyDocument": {
                "Version": "2012-10-17", "Statement": worker_statements(settings)}}],
        },
    }


def worker_statements(settings: DeploySettings) -> list[dict[str, Any]]:
    """The function role's statements: every action on a named resource, S3 listing only under the prefixes."""
    models = [arn for m in settings.model_locations()
              for arn in (_object(m.bucket, m.key.rstrip("/")), _object(m.bucket, m.key.rstrip("/") + "/*"))]
    inputs, outputs = settings.input_location(), settings.output_location()
    return [
        _allow("ReadModels", ["s3:GetObject"], models),
        _allow("ReadInputs", ["s3:GetObject"], [_object(inputs.bucket, inputs.key + "*")]),
        _allow("WriteOutputs", ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"], [_object(outputs.bucket, outputs.key + "*")]),
        *_listing(settings),
        _allow("ConsumeRequests",
               ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:GetQueueAttributes"],
               [{"Fn::GetAtt": ["RequestQueue", "Arn"]}]),
        _allow("SendResults", ["sqs:SendMessage"], [{"Fn::GetAtt": ["ResultsQueue", "Arn"]}]),
        _allow("WriteLogs", ["logs:CreateLogStream", "logs:PutLogEvents"], [{"Fn::GetAtt": ["LogGroup", "Arn"]}]),
    ]


def _allow(sid: str, actions: list[str], resources: list[Any]) -> dict[str, Any]:
    return {"Sid": sid, "Effect": "Allow", "Action": actions, "Resource": resources}


def _object(bucket: str, key: str) -> dict[str, str]:
    """The ARN of the objects ``key`` (which may end in ``*``) of ``bucket``."""
    return _sub(f"arn:${{AWS::Partition}}:s3:::{bucket}/{key}")


def _listing(settings: DeploySettings) -> list[dict[str, Any]]:
    """``s3:ListBucket`` per bucket, allowed only for prefixes under the locations the function uses."""
    prefixes: dict[str, set[str]] = {}
    for location in [*settings.model_locations(), settings.input_location(), settings.output_location()]:
        folder = location.key.rstrip("/")
        prefixes.setdefault(location.bucket, set()).update({folder, f"{folder}/*"} if folder else {"*"})
    return [
        {"Sid": f"List{index}", "Effect": "Allow", "Action": ["s3:ListBucket"],
         "Resource": _sub(f"arn:${{AWS::Partition}}:s3:::{bucket}"),
         "Condition": {"StringLike": {"s3:prefix": sorted(found)}}}
        for index, (bucket, found) in enumerate(sorted(prefixes.items()))
    ]


def _event_senders(settings: DeploySettings) -> dict[str, Any]:
    """The schedule rule and the events queue's policy for whoever sends to it (the trigger bucket, the rule)."""
    resources: dict[str, Any] = {}
    statements = []
    trigger = settings.trigger_location()
    if trigger is not None:
        statements.append({
            "Sid": "BucketNotifications", "Effect": "Allow", "Principal": {"Service": "s3.amazonaws.com"},
            "Action": "sqs:SendMessage", "Resource": {"Fn::GetAtt": ["EventsQueue", "Arn"]},
            "Condition": {"ArnLike": {"aws:SourceArn": _sub(f"arn:${{AWS::Partition}}:s3:::{trigger.bucket}")},
                          "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}},
        })
    if settings.schedule is not None:
        resources["Schedule"] = {"Type": "AWS::Events::Rule", "Properties": {
            "Description": f"squall deploy {settings.stack}: scheduled jobs",
            "ScheduleExpression": settings.schedule, "State": "ENABLED",
            "Targets": [{"Id": "events-queue", "Arn": {"Fn::GetAtt": ["EventsQueue", "Arn"]}}]}}
        statements.append({
            "Sid": "ScheduledEvents", "Effect": "Allow", "Principal": {"Service": "events.amazonaws.com"},
            "Action": "sqs:SendMessage", "Resource": {"Fn::GetAtt": ["EventsQueue", "Arn"]},
            "Condition": {"ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": ["Schedule", "Arn"]}}},
        })
    if statements:
        resources["EventsQueuePolicy"] = {"Type": "AWS::SQS::QueuePolicy", "Properties": {
            "Queues": [{"Ref": "EventsQueue"}],
            "PolicyDocument": {"Version": "2012-10-17", "Statement": statements}}}
    return resources


def _outputs(settings: DeploySettings) -> dict[str, Any]:
    outputs = {
        "FunctionName": ("the worker function", {"Ref": "Function"}),
        "RequestQueueUrl": ("chunk messages (squall run --backend sqs --queue NAME)", {"Ref": "RequestQueue"}),
        "ResultsQueueUrl": ("invocation reports", {"Ref": "ResultsQueue"}),
        "DeadLetterQueueUrl": ("messages received max_receive_count times", {"Ref": "DeadLetterQueue"}),
        "EventsQueueUrl": ("file arrivals and schedules (squall serve, trigger kind sqs-events)", {"Ref": "EventsQueue"}),
        "EventsQueueArn": ("where the trigger bucket's notification goes", {"Fn::GetAtt": ["EventsQueue", "Arn"]}),
    }
    trigger = settings.trigger_location()
    if trigger is not None:
        outputs["TriggerBucket"] = ("the bucket whose notification --delete removes", trigger.bucket)
    return {key: {"Description": description, "Value": value} for key, (description, value) in outputs.items()}


def _sub(text: str) -> dict[str, str]:
    return {"Fn::Sub": text}
