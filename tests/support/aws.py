"""AWS on loopback for ``squall deploy aws`` and the ``sqs-events`` trigger: moto's server, boto3 clients on it, and
the environment a ``squall`` process needs to reach it (and nothing else: no real endpoint, no instance metadata)."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3

from support.cli import SQUALL, run_cli
from support.s3server import CREDENTIALS, S3Server

CFN_LINT = shutil.which("cfn-lint") or str(Path(sys.executable).parent / "cfn-lint")


def aws_env(server: S3Server) -> dict[str, str]:
    """Every AWS service at the moto server, the test credentials, and no instance-metadata lookups."""
    return {**CREDENTIALS, "AWS_ENDPOINT_URL": server.endpoint, "AWS_EC2_METADATA_DISABLED": "true"}


def client(server: S3Server, service: str) -> Any:
    """A boto3 client of ``service`` on the moto server."""
    return boto3.client(service, endpoint_url=server.endpoint, region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
                        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"])


def deploy_cli(server: S3Server | None, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``squall deploy aws ARGS`` in a fresh process, with AWS at ``server`` (or, with None, at no endpoint at all)."""
    return run_cli("deploy", "aws", *args, env={**(aws_env(server) if server else {}), **(env or {})})


def without_aws(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``squall ARGS`` where no AWS credentials can be found: no ``AWS_*`` variable, no config file, no instance
    metadata, and an endpoint nobody listens on."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    env.update(AWS_CONFIG_FILE=str(tmp_path / "none"), AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
               AWS_EC2_METADATA_DISABLED="true", AWS_ENDPOINT_URL="http://127.0.0.1:9", AWS_DEFAULT_REGION="us-east-1")
    return subprocess.run([*SQUALL, *args], check=False, capture_output=True, text=True, env=env, timeout=240)


def cfn_lint(template: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """cfn-lint on ``template`` (JSON text)."""
    path = tmp_path / "template.json"
    path.write_text(template)
    return subprocess.run([CFN_LINT, str(path)], check=False, capture_output=True, text=True, timeout=240)


def policy_statements(server: S3Server, role_arn: str) -> dict[str, dict[str, Any]]:
    """The inline policy statements of the role ``role_arn``, by Sid."""
    iam = client(server, "iam")
    role = role_arn.rsplit("/", 1)[-1]
    statements: dict[str, dict[str, Any]] = {}
    for name in iam.list_role_policies(RoleName=role)["PolicyNames"]:
        document = iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
        if isinstance(document, str):  # moto's CloudFormation keeps an inline policy as Python's repr of it
            document = ast.literal_eval(document)
        statements.update({s["Sid"]: s for s in document["Statement"]})
    return statements


def queue_attributes(server: S3Server, name: str) -> dict[str, str]:
    sqs = client(server, "sqs")
    return dict(sqs.get_queue_attributes(QueueUrl=sqs.get_queue_url(QueueName=name)["QueueUrl"], AttributeNames=["All"])["Attributes"])


def queue_names(server: S3Server) -> set[str]:
    return {url.rsplit("/", 1)[-1] for url in client(server, "sqs").list_queues().get("QueueUrls", [])}
