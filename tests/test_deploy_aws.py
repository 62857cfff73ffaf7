"""`squall deploy aws`: the template passes cfn-lint, and the stack is created, updated and deleted on moto's
CloudFormation (on loopback: nothing here reaches AWS), with its settings read back from the services.

moto does not run everything CloudFormation would: it skips ``AWS::SQS::QueuePolicy`` (the events queue's
policy is asserted in the template instead) and reports an image function's ``PackageType`` as ``Zip`` (its
``ImageUri`` is asserted). A real Lambda invocation cannot run here; the handler has its own tests.
"""

from __future__ import annotations

import json
import math
import random
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from support.aws import (
    cfn_lint,
    client,
    deploy_cli,
    policy_statements,
    queue_attributes,
    queue_names,
    without_aws,
)
from support.cli import run_cli
from support.data import make_frame, write_frame
from support.s3 import filesystem, upload_frame
from support.s3server import CREDENTIALS, S3Server

from squall.backends.sqs.deploy.settings import S3Location, deploy_settings
from squall.backends.sqs.deploy.template import worker_statements

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/squall:1.0"


def plain(bucket: str = "data") -> list[str]:
    """A deployment of one model, reading and writing one bucket's prefixes."""
    return ["--model", "s3://models/churn/model.onnx", "--input-prefix", f"s3://{bucket}/in/*.parquet",
            "--output-prefix", f"s3://{bucket}/out/"]


def full(bucket: str = "data") -> list[str]:
    """:func:`plain`, with the limits of the issue's example, a file-arrival trigger and a schedule."""
    return [*plain(bucket), "--memory", "3008", "--timeout", "600", "--max-concurrency", "200",
            "--trigger-prefix", f"s3://{bucket}/inbox/", "--schedule", "rate(1 hour)"]


def stack_name() -> str:
    return f"preds{random.randrange(10**6)}"


def template_of(result: Any) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    found: dict[str, Any] = json.loads(result.stdout)
    return found


@pytest.mark.parametrize("options", [plain(), full()], ids=["plain", "trigger-and-schedule"])
def test_the_template_passes_cfn_lint(tmp_path: Path, options: list[str]) -> None:
    result = deploy_cli(None, "--stack", "preds", "--dry-run", *options)
    template = template_of(result)
    lint = cfn_lint(result.stdout, tmp_path)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    expected = {"DeadLetterQueue", "RequestQueue", "ResultsQueue", "EventsQueue", "LogGroup", "FunctionRole",
                "Function", "RequestSource"}
    if "--schedule" in options:
        expected |= {"Schedule", "EventsQueuePolicy"}
    assert set(template["Resources"]) == expected


def test_dry_run_prints_the_template_without_credentials_and_touches_nothing(s3: S3Server, tmp_path: Path) -> None:
    before = len(s3.log.requests)
    without = template_of(without_aws(tmp_path, "deploy", "aws", "--stack", "preds", "--dry-run", *full(), "--image", IMAGE))
    result = deploy_cli(s3, "--stack", "preds", "--dry-run", *full(), "--image", IMAGE)
    template = template_of(result)
    assert template == without
    assert template["Parameters"]["ImageUri"]["Default"] == IMAGE
    deleting = deploy_cli(s3, "--stack", "preds", "--delete", "--dry-run")
    assert deleting.returncode == 0 and "would delete stack preds" in deleting.stdout
    assert len(s3.log.requests) == before, "a dry run sent requests"
    assert CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in result.stdout + result.stderr
    assert "stack preds: 3008 MB, timeout 600 s" in result.stderr


def test_a_dry_run_cannot_mislead_a_bad_limit_is_refused_with_lambdas_bounds() -> None:
    result = deploy_cli(None, "--stack", "preds", "--dry-run", *plain(), "--timeout", "1200", "--max-concurrency", "1")
    assert result.returncode == 2
    assert "--timeout" in result.stderr and "900" in result.stderr and "--chunk-rows" in result.stderr
    assert "--max-concurrency" in result.stderr
    nowhere = deploy_cli(None, "--stack", "preds", "--dry-run", "--model", "/models/local.onnx", "--input-prefix",
                         "s3://data/in/", "--output-prefix", "s3://data/out/")
    assert nowhere.returncode == 2 and "--model must be an S3 URL" in nowhere.stderr
    unscoped = deploy_cli(None, "--stack", "preds", "--dry-run", "--model", "s3://models/m.onnx")
    assert unscoped.returncode == 2 and "--input-prefix" in unscoped.stderr and "--output-prefix" in unscoped.stderr
    assert "may read inputs only there" in unscoped.stderr
    unnamed = deploy_cli(None, "--stack", "9-lives", "--dry-run", *plain())
    assert unnamed.returncode == 2 and "--stack" in unnamed.stderr and "a letter first" in unnamed.stderr


def test_limits_come_from_the_spec_then_the_environment_then_the_options(tmp_path: Path) -> None:
    spec = tmp_path / "job.toml"
    spec.write_text('model = "s3://models/m.onnx"\ninput = ["s3://data/in/day=1/*.parquet"]\noutput = "s3://data/out/"\n'
                    "memory = 2048\ntimeout = 300.5\nworkers = 50\n")
    from_spec = template_of(deploy_cli(None, "--stack", "preds", "--dry-run", "--spec", str(spec)))
    function = from_spec["Resources"]["Function"]["Properties"]
    assert (function["MemorySize"], function["Timeout"]) == (2048, 301)
    assert from_spec["Resources"]["RequestSource"]["Properties"]["ScalingConfig"]["MaximumConcurrency"] == 50
    assert from_spec["Resources"]["RequestQueue"]["Properties"]["VisibilityTimeout"] == 6 * 301
    reads = {s["Sid"]: s for s in from_spec["Resources"]["FunctionRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]}
    assert reads["ReadInputs"]["Resource"] == [{"Fn::Sub": "arn:${AWS::Partition}:s3:::data/in/day=1/*"}]

    environment = template_of(deploy_cli(None, "--stack", "preds", "--dry-run", "--spec", str(spec),
                                         env={"SQUALL_MEMORY": "4096"}))
    assert environment["Resources"]["Function"]["Properties"]["MemorySize"] == 4096
    option = template_of(deploy_cli(None, "--stack", "preds", "--dry-run", "--spec", str(spec), "--memory", "1024",
                                    env={"SQUALL_MEMORY": "4096"}))
    assert option["Resources"]["Function"]["Properties"]["MemorySize"] == 1024


def test_without_credentials_deploying_says_what_to_set(tmp_path: Path) -> None:
    result = without_aws(tmp_path, "deploy", "aws", "--stack", "preds", *plain(), "--image", IMAGE)
    assert result.returncode == 2, result.stderr
    assert "AWS_ACCESS_KEY_ID" in result.stderr and "--dry-run" in result.stderr
    deleting = without_aws(tmp_path, "deploy", "aws", "--stack", "preds", "--delete")
    assert deleting.returncode == 2 and "AWS_ACCESS_KEY_ID" in deleting.stderr


def test_the_stack_is_created_with_its_settings_updated_and_deleted_on_moto(s3: S3Server, bucket: str) -> None:
    stack = stack_name()
    created = deploy_cli(s3, "--stack", stack, *full(bucket), "--image", IMAGE)
    assert created.returncode == 0, created.stderr
    outputs = dict(line.split(None, 1) for line in created.stdout.splitlines())
    assert outputs["RequestQueueUrl"].endswith(f"/{stack}") and outputs["TriggerBucket"] == bucket
    assert f"{stack} CREATE_COMPLETE" in created.stderr
    assert CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in created.stdout + created.stderr

    assert_function(s3, stack, memory=3008, timeout=600, concurrency=200)
    assert_queues(s3, stack, visibility=3600)
    assert_role(s3, stack, bucket)
    assert_triggers(s3, stack, bucket)

    updated = deploy_cli(s3, "--stack", stack, *plain(bucket), "--memory", "4096", "--timeout", "120", "--image", IMAGE)
    assert updated.returncode == 0, updated.stderr
    assert_function(s3, stack, memory=4096, timeout=120, concurrency=10)
    assert "QueueConfigurations" not in notifications(s3, bucket), "the trigger left in the update kept its notification"

    deleted = deploy_cli(s3, "--stack", stack, "--delete")
    assert deleted.returncode == 0 and f"stack {stack} deleted" in deleted.stdout, deleted.stderr
    assert not queue_names(s3) & {stack, f"{stack}-results", f"{stack}-dlq", f"{stack}-events"}
    assert stack not in [f["FunctionName"] for f in client(s3, "lambda").list_functions()["Functions"]]
    again = deploy_cli(s3, "--stack", stack, "--delete")
    assert again.returncode == 0 and "nothing to delete" in again.stdout


def test_delete_takes_the_trigger_notification_out_and_keeps_the_buckets_others(s3: S3Server, bucket: str) -> None:
    stack = stack_name()
    s3_client = client(s3, "s3")
    other = client(s3, "sqs").create_queue(QueueName=f"other{stack}")["QueueUrl"]
    other_arn = client(s3, "sqs").get_queue_attributes(QueueUrl=other, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3_client.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={"QueueConfigurations": [
        {"Id": "someone-else", "QueueArn": other_arn, "Events": ["s3:ObjectRemoved:*"]}]})
    assert deploy_cli(s3, "--stack", stack, *full(bucket), "--image", IMAGE).returncode == 0
    assert {c["Id"] for c in notifications(s3, bucket)["QueueConfigurations"]} == {"someone-else", f"squall-{stack}"}
    assert deploy_cli(s3, "--stack", stack, "--delete").returncode == 0
    assert {c["Id"] for c in notifications(s3, bucket)["QueueConfigurations"]} == {"someone-else"}


def assert_function(s3: S3Server, stack: str, memory: int, timeout: int, concurrency: int) -> None:
    lam = client(s3, "lambda")
    function = lam.get_function(FunctionName=stack)
    assert function["Code"]["ImageUri"] == IMAGE
    config = function["Configuration"]
    assert (config["MemorySize"], config["Timeout"]) == (memory, timeout)
    (mapping,) = lam.list_event_source_mappings(FunctionName=stack)["EventSourceMappings"]
    assert mapping["EventSourceArn"].endswith(f":{stack}")
    assert mapping["ScalingConfig"] == {"MaximumConcurrency": concurrency}
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["BatchSize"] == 1


def assert_queues(s3: S3Server, stack: str, visibility: int) -> None:
    assert {stack, f"{stack}-results", f"{stack}-dlq", f"{stack}-events"} <= queue_names(s3)
    requests = queue_attributes(s3, stack)
    redrive = json.loads(requests["RedrivePolicy"])
    assert redrive["maxReceiveCount"] == 3
    assert redrive["deadLetterTargetArn"] == queue_attributes(s3, f"{stack}-dlq")["QueueArn"]
    assert int(requests["VisibilityTimeout"]) == visibility


def assert_role(s3: S3Server, stack: str, bucket: str) -> None:
    """Every S3 action is limited to the model, the input prefix or the output prefix; SQS to the two queues."""
    role = client(s3, "lambda").get_function_configuration(FunctionName=stack)["Role"]
    statements = policy_statements(s3, role)
    account_queue = queue_attributes(s3, stack)["QueueArn"].rsplit(":", 1)[0]
    assert statements["ReadModels"]["Action"] == ["s3:GetObject"]
    assert statements["ReadModels"]["Resource"] == ["arn:aws:s3:::models/churn/model.onnx", "arn:aws:s3:::models/churn/model.onnx/*"]
    assert statements["ReadInputs"]["Resource"] == [f"arn:aws:s3:::{bucket}/in/*"]
    assert sorted(statements["WriteOutputs"]["Action"]) == ["s3:DeleteObject", "s3:GetObject", "s3:PutObject"]
    assert statements["WriteOutputs"]["Resource"] == [f"arn:aws:s3:::{bucket}/out/*"]
    listings = {s["Resource"]: s["Condition"]["StringLike"]["s3:prefix"] for sid, s in statements.items() if sid.startswith("List")}
    assert listings == {f"arn:aws:s3:::{bucket}": ["in", "in/*", "out", "out/*"],
                        "arn:aws:s3:::models": ["churn/model.onnx", "churn/model.onnx/*"]}
    assert statements["ConsumeRequests"]["Resource"] == [f"{account_queue}:{stack}"]
    assert "sqs:SendMessage" not in statements["ConsumeRequests"]["Action"]
    assert statements["SendResults"] == {"Sid": "SendResults", "Effect": "Allow", "Action": ["sqs:SendMessage"],
                                         "Resource": [f"{account_queue}:{stack}-results"]}
    assert set(statements) == {"ReadModels", "ReadInputs", "WriteOutputs", "List0", "List1", "ConsumeRequests",
                               "SendResults", "WriteLogs"}
    for statement in statements.values():
        assert "*" not in statement["Action"] and all("*" != r for r in _resources(statement))


def assert_triggers(s3: S3Server, stack: str, bucket: str) -> None:
    events = client(s3, "events")
    (rule,) = [r for r in events.list_rules()["Rules"] if r["Name"].startswith(f"{stack}-")]
    assert rule["ScheduleExpression"] == "rate(1 hour)" and rule["State"] == "ENABLED"
    events_arn = queue_attributes(s3, f"{stack}-events")["QueueArn"]
    assert [t["Arn"] for t in events.list_targets_by_rule(Rule=rule["Name"])["Targets"]] == [events_arn]
    (ours,) = [c for c in notifications(s3, bucket)["QueueConfigurations"] if c["Id"] == f"squall-{stack}"]
    assert ours["QueueArn"] == events_arn and ours["Events"] == ["s3:ObjectCreated:*"]
    assert ours["Filter"]["Key"]["FilterRules"] == [{"Name": "prefix", "Value": "inbox/"}]


def notifications(s3: S3Server, bucket: str) -> dict[str, Any]:
    found = client(s3, "s3").get_bucket_notification_configuration(Bucket=bucket)
    found.pop("ResponseMetadata", None)
    return dict(found)


def _resources(statement: dict[str, Any]) -> list[str]:
    resource = statement["Resource"]
    return resource if isinstance(resource, list) else [resource]


@pytest.mark.parametrize(("uri", "bucket", "key"), [
    ("s3://data/in/*.parquet", "data", "in/"),
    ("s3://data/in/", "data", "in/"),
    ("s3://data/in", "data", "in/"),
    ("s3://data/a/b/part-{0..9}.csv", "data", "a/b/"),
    ("s3://data", "data", ""),
    ("s3://data/*.csv", "data", ""),
])
def test_a_prefix_is_the_folder_before_any_glob(uri: str, bucket: str, key: str) -> None:
    assert S3Location.prefix_of(uri, "--input-prefix") == S3Location(bucket, key)


def test_plan_plans_the_specs_job_under_the_deployments_limits(s3: S3Server, bucket: str, tmp_path: Path) -> None:
    fs = filesystem(s3)
    for index in range(2):
        upload_frame(fs, make_frame(3_000, seed=index, start=index * 3_000), f"{bucket}/in/f{index}.parquet", "parquet")
    spec = tmp_path / "job.toml"
    spec.write_text(f'model = "s3://{bucket}/models/m.onnx"\ninput = ["s3://{bucket}/in/*.parquet"]\n'
                    f'output = "s3://{bucket}/out/"\nendpoint_url = "{s3.endpoint}"\nchunk_rows = 1000\nworkers = 20\n')
    result = deploy_cli(s3, "--stack", "preds", "--spec", str(spec), "--plan", "--dry-run", "--timeout", "60")
    template_of(result)
    assert "plan: 6 invocations, 1,000 rows per chunk" in result.stderr
    assert "no measured speed for this model: run `squall tune`" in result.stderr
    assert "at most 20 concurrent functions" in result.stderr and "timeout 60 s" in result.stderr
    assert "cores" not in result.stderr  # this machine's cores say nothing about functions


def test_the_lambda_image_runs_the_handler_with_extras_the_project_defines() -> None:
    """Static: the base image cannot be pulled here, so the image is not built (hadolint passes on it, by hand)."""
    root = Path(__file__).resolve().parents[1]
    lines = (root / "Dockerfile.lambda").read_text().splitlines()
    assert "FROM public.ecr.aws/lambda/python:3.11" in lines
    assert lines[-1] == 'CMD ["squall.backends.sqs.lambda_handler.handler"]'
    (default,) = [line.split("=", 1)[1] for line in lines if line.startswith("ARG EXTRAS=")]
    defined = tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "aws" in default.split(",") and set(default.split(",")) <= set(defined)


def test_a_model_folder_is_readable_as_the_folder_and_nothing_beside_it() -> None:
    settings = deploy_settings(stack="p", models=("s3://models/mlflow/m/",), input_prefix="s3://data/in",
                               output_prefix="s3://data/out/")
    statements = {s["Sid"]: s for s in worker_statements(settings)}
    assert statements["ReadModels"]["Resource"] == [{"Fn::Sub": "arn:${AWS::Partition}:s3:::models/mlflow/m"},
                                                    {"Fn::Sub": "arn:${AWS::Partition}:s3:::models/mlflow/m/*"}]
    assert statements["List1"]["Condition"] == {"StringLike": {"s3:prefix": ["mlflow/m", "mlflow/m/*"]}}


def test_plan_scales_the_measured_speed_to_the_functions_share_of_a_vcpu(tmp_path: Path, linear_model: Path) -> None:
    """A local run measures the model's speed on one core; at 128 MB a function has 128/1769 of a vCPU, so the
    chunk that fits the timeout on a full core does not fit it there. The chunk is big enough that even at
    several million rows per second a whole second (the least timeout) is under its time at 128 MB."""
    rows = 1_000_000
    write_frame(make_frame(rows, seed=1), tmp_path / "in" / "f.parquet", "parquet", 250_000)
    spec = tmp_path / "job.toml"
    spec.write_text(f'model = "{linear_model}"\ninput = ["{tmp_path / "in"}"]\noutput = "{tmp_path / "out"}"\n'
                    f'key = ["id"]\nchunk_rows = {rows}\nworkers = 1\nfork = false\n')
    ran = run_cli("run", "--spec", str(spec), "--quiet")
    assert ran.returncode == 0, ran.stderr
    measured = json.loads(run_cli("plan", "--spec", str(spec), "--json").stdout)["forecast"]["measured"]["rows_per_s"]
    # three times the time the chunk takes on a full core: it fits there, and not at 128 MB (13.8× slower)
    timeout = str(max(1, math.ceil(3 * rows / measured)))
    assert rows / (measured * 128 / 1769) > int(timeout), f"{measured:,.0f} rows/s: the chunk fits 1 s even at 128 MB"
    scoped = ["--model", "s3://models/m.onnx", "--input-prefix", "s3://data/in/", "--output-prefix", "s3://data/out/",
              "--max-concurrency", "2"]
    full_core = deploy_cli(None, "--stack", "p", "--spec", str(spec), *scoped, "--plan", "--dry-run",
                           "--memory", "1769", "--timeout", timeout)
    small = deploy_cli(None, "--stack", "p", "--spec", str(spec), *scoped, "--plan", "--dry-run",
                       "--memory", "128", "--timeout", timeout)
    assert full_core.returncode == 0 and small.returncode == 0, full_core.stderr + small.stderr
    assert "will exceed" not in full_core.stderr, full_core.stderr
    assert f"chunk(s) will exceed the {timeout} s timeout" in small.stderr, small.stderr
    assert shown_speed(full_core.stderr) == pytest.approx(measured, rel=0.01, abs=1)
    assert shown_speed(small.stderr) == pytest.approx(measured * 128 / 1769, rel=0.01, abs=1)


def shown_speed(text: str) -> float:
    match = re.search(r"plan: ([\d,]+) rows/s per function", text)
    assert match, text
    return float(match[1].replace(",", ""))
