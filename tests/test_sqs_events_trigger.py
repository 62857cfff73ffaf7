"""The `sqs-events` trigger: `squall serve` turns the S3 notifications and scheduled events that arrive on a
deployment's events queue into jobs, each exactly once, also across a SIGKILL of the server.

Everything runs on loopback: moto's server is S3, SQS and CloudFormation; `squall deploy aws` creates the
events queue and sets the bucket notification, and moto's S3 sends each notification (in the shape AWS sends)
when an object is put. moto does not fire EventBridge schedules, so the test sends the scheduled event itself,
in the shape EventBridge sends to a queue target.
"""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import time
from contextlib import closing
from pathlib import Path

import httpx
import pytest
from support.aws import aws_env, client, deploy_cli
from support.data import make_frame, read_output
from support.s3 import filesystem, upload_frame
from support.s3server import S3Server
from support.service import free_port, serve_process
from support.triggers import ROWS, complete_outputs

from squall.spec import JobSpec
from squall.triggers.seen import SeenRecord
from squall.triggers.sqs_events import QueueEventsRule, QueueEventsTrigger
from squall.triggers.template import file_job_id

TOKEN = "sqs-events-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/squall:1.0"


def write_config(tmp_path: Path, s3: S3Server, model: Path, bucket: str, queue: str) -> Path:
    common = [f'model = "{model}"', f'endpoint_url = "{s3.endpoint}"', "workers = 1", "fork = false", 'key = ["id"]']
    (tmp_path / "template.toml").write_text("\n".join([*common, f'output = "{tmp_path / "out"}"']) + "\n")
    (tmp_path / "daily.toml").write_text("\n".join([*common, f'input = ["s3://{bucket}/daily/f90.parquet"]',
                                                    f'output = "{tmp_path / "daily"}/{{date}}"']) + "\n")
    config = tmp_path / "squall-serve.toml"
    config.write_text(f'max_concurrency = 2\n[[triggers]]\nkind = "sqs-events"\nqueue = "{queue}"\nspec = "template.toml"\n'
                      'schedule_spec = "daily.toml"\npattern = "*.parquet"\nwait_s = 1\nvisibility_s = 15\n')
    return config


def drop(s3: S3Server, bucket: str, indexes: range) -> None:
    fs = filesystem(s3)
    for index in indexes:
        upload_frame(fs, make_frame(ROWS, seed=index, start=index * ROWS), f"{bucket}/inbox/f{index:02d}.parquet", "parquet")


def wait_for(count: int, out: Path, server: subprocess.Popen[str], timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while len(complete_outputs(out)) < count:
        assert server.poll() is None, server.stdout.read() if server.stdout else ""
        assert time.monotonic() < deadline, f"only {len(complete_outputs(out))} of {count} outputs after {timeout_s} s"
        time.sleep(0.3)


def queue_is_empty(s3: S3Server, queue: str) -> bool:
    sqs = client(s3, "sqs")
    attributes = sqs.get_queue_attributes(QueueUrl=sqs.get_queue_url(QueueName=queue)["QueueUrl"],
                                          AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])
    return all(int(value) == 0 for value in attributes["Attributes"].values())


def send(s3: S3Server, queue: str, body: object) -> None:
    sqs = client(s3, "sqs")
    sqs.send_message(QueueUrl=sqs.get_queue_url(QueueName=queue)["QueueUrl"], MessageBody=json.dumps(body))


def object_created(bucket: str, key: str) -> dict[str, object]:
    """An S3 notification as AWS sends it (the key URL-encoded), for an object already notified once."""
    return {"Records": [{"eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
                         "eventTime": "2026-11-29T10:00:00.000Z", "eventName": "ObjectCreated:Put",
                         "s3": {"s3SchemaVersion": "1.0", "configurationId": "squall-x", "bucket": {"name": bucket},
                                "object": {"key": key.replace("/", "%2F"), "size": 1}}}]}


def scheduled_event(rule_arn: str) -> dict[str, object]:
    """What an EventBridge schedule rule sends to its queue target."""
    return {"version": "0", "id": "0b3d1c4e-8f6a-4f3e-9b7d-2a1c5e6f7a8b", "detail-type": "Scheduled Event",
            "source": "aws.events", "account": "123456789012", "time": "2026-11-29T02:00:00Z",
            "region": "us-east-1", "resources": [rule_arn], "detail": {}}


def test_objects_and_scheduled_events_on_the_events_queue_are_jobs_exactly_once_across_a_server_sigkill(
        s3: S3Server, bucket: str, tmp_path: Path, linear_model: Path, squall_home: Path) -> None:
    stack = f"ev{random.randrange(10**6)}"
    deployed = deploy_cli(s3, "--stack", stack, "--model", f"s3://{bucket}/m.onnx", "--input-prefix", f"s3://{bucket}/inbox/",
                          "--output-prefix", f"s3://{bucket}/out/", "--trigger-prefix", f"s3://{bucket}/inbox/",
                          "--schedule", "cron(0 2 * * ? *)", "--image", IMAGE)
    assert deployed.returncode == 0, deployed.stderr
    queue = f"{stack}-events"
    upload_frame(filesystem(s3), make_frame(ROWS, seed=90, start=90 * ROWS), f"{bucket}/daily/f90.parquet", "parquet")
    config = write_config(tmp_path, s3, linear_model, bucket, queue)
    port = free_port()
    env = {**aws_env(s3), "SQUALL_TOKEN": TOKEN}
    server = serve_process(port, "--config", str(config), env=env)
    try:
        drop(s3, bucket, range(6))
        send(s3, queue, "not an event")
        send(s3, queue, {"hello": "world"})
        wait_for(2, tmp_path / "out", server)
        server.send_signal(signal.SIGKILL)  # files notified and not yet consumed, jobs queued in the service
        server.wait()
        assert len(complete_outputs(tmp_path / "out")) < 6, "the kill landed after every job had finished"
        drop(s3, bucket, range(6, 10))
        send(s3, queue, object_created(bucket, "inbox/f03.parquet"))  # SQS delivers at least once: a duplicate
        send(s3, queue, scheduled_event(f"arn:aws:events:us-east-1:123456789012:rule/{stack}-Schedule"))
        server = serve_process(port, "--config", str(config), env=env)
        wait_for(10, tmp_path / "out", server)
        deadline = time.monotonic() + 120
        while not (tmp_path / "daily" / "2026-11-29" / "_SUCCESS").exists() or not queue_is_empty(s3, queue):
            assert server.poll() is None and time.monotonic() < deadline, "the scheduled job or a message is left"
            time.sleep(0.3)
        jobs = httpx.get(f"http://127.0.0.1:{port}/jobs?limit=100", headers=AUTH).json()["jobs"]
    finally:
        server.send_signal(signal.SIGINT)
        server.communicate(timeout=60)
    assert len(jobs) == 11 and {job["source"] for job in jobs} == {"sqs-events"}
    assert {job["state"] for job in jobs} == {"SUCCEEDED"}
    with closing(sqlite3.connect(squall_home / "squall.db")) as store:
        assert store.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 11
    assert complete_outputs(tmp_path / "out") == {f"f{i:02d}" for i in range(10)}
    for index in range(10):
        assert sorted(read_output(tmp_path / "out" / f"f{index:02d}")["id"]) == list(range(index * ROWS, (index + 1) * ROWS))
    assert sorted(read_output(tmp_path / "daily" / "2026-11-29")["id"]) == list(range(90 * ROWS, 91 * ROWS))
    assert deploy_cli(s3, "--stack", stack, "--delete").returncode == 0


def test_each_message_shape_starts_the_jobs_it_names_and_only_those(s3: S3Server, tmp_path: Path, linear_model: Path) -> None:
    """The trigger's poll on a real queue, its runner collecting the specs (a stand-in for the service's queue)."""
    sqs = client(s3, "sqs")
    queue = f"shapes{random.randrange(10**6)}"
    sqs.create_queue(QueueName=queue)
    template = {"model": str(linear_model), "output": str(tmp_path / "out")}
    rule = QueueEventsRule(queue=queue, template=template, pattern="*.parquet", wait_s=0,
                           schedule_template={**template, "input": ["s3://b/daily/{date}.parquet"], "output": str(tmp_path / "d/{date}")})
    created = object_created("b", "inbox/a b.parquet")
    created["Records"][0]["s3"]["object"]["key"] = "inbox/a+b.parquet"  # type: ignore[index]  # S3 encodes a space as +
    removed = json.loads(json.dumps(object_created("b", "inbox/c.parquet")).replace("ObjectCreated:Put", "ObjectRemoved:Delete"))
    for body in [{"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "b"}, created, created, removed,
                 object_created("b", "inbox/notes.txt"), {"Records": [{"eventSource": "aws:s3"}]},
                 scheduled_event("arn:aws:events:us-east-1:123456789012:rule/x"), "{not json"]:
        sqs.send_message(QueueUrl=sqs.get_queue_url(QueueName=queue)["QueueUrl"],
                         MessageBody=body if isinstance(body, str) else json.dumps(body))
    started: list[JobSpec] = []

    def runner(spec: JobSpec) -> None:
        started.append(spec)

    seen = SeenRecord(tmp_path / "state")
    trigger = QueueEventsTrigger(rule, client(s3, "sqs"), seen, runner)
    deadline = time.monotonic() + 60
    while not queue_is_empty(s3, queue):
        trigger.poll()
        assert time.monotonic() < deadline, "messages are left on the queue"
    assert [(s.input, s.output, s.job_id) for s in started] == [
        (["s3://b/inbox/a b.parquet"], str(tmp_path / "out" / "a b"), file_job_id(queue, "s3://b/inbox/a b.parquet")),
        (["s3://b/daily/2026-11-29.parquet"], str(tmp_path / "d" / "2026-11-29"), f"{queue}-20261129T020000Z"),
    ]
    assert {entry.key for entry in seen.entries()} == {"s3://b/inbox/a b.parquet", "2026-11-29T02:00:00+00:00"}
    seen.close()


def test_an_event_its_template_cannot_fill_is_logged_and_deleted_not_received_forever(
        s3: S3Server, tmp_path: Path, linear_model: Path, caplog: pytest.LogCaptureFixture) -> None:
    sqs = client(s3, "sqs")
    queue = f"unfit{random.randrange(10**6)}"
    url = sqs.create_queue(QueueName=queue)["QueueUrl"]
    # {file} means nothing for a scheduled event (`squall serve` refuses this rule at start; the trigger is safe anyway)
    rule = QueueEventsRule(queue=queue, template={"model": str(linear_model), "output": str(tmp_path / "out")}, wait_s=0,
                           schedule_template={"model": str(linear_model), "input": ["{file}"], "output": str(tmp_path / "d")})
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps(scheduled_event("arn:aws:events:us-east-1:123456789012:rule/x")))
    started: list[JobSpec] = []
    trigger = QueueEventsTrigger(rule, sqs, SeenRecord(tmp_path / "state"), started.append)
    deadline = time.monotonic() + 60
    while not queue_is_empty(s3, queue):
        trigger.poll()
        assert time.monotonic() < deadline, "the message is left on the queue"
    assert started == [] and "starts no job" in caplog.text and "{file}" in caplog.text
