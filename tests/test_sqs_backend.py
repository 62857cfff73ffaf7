"""The sqs backend on real parts: SQS and S3 served by moto on loopback, real ``squall worker`` processes.

Every attempt is a message on the request queue; workers reply on the results
queue; the coordinator commits. Predictions equal the model's own call, rows
are committed exactly once whatever is killed, and what no worker can run ends
in SQS's dead-letter queue.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support.cli import SQUALL, run_cli
from support.s3 import (
    assert_committed_exactly,
    read_s3_output,
    upload_ids,
)
from support.s3server import S3Server
from support.sqs import wait_until
from support.sqs_deployment import (
    Deployment,
    assert_predictions_equal_the_model,
    deploy,
    upload_inputs,
)

import squall
import squall.errors
from squall.backends.sqs.backend import SqsBackend
from squall.backends.sqs.envelope import Dispatch
from squall.backends.sqs.options import SqsOptions
from squall.backends.sqs.task_object import task_uri
from squall.plan.chunk import Chunk, Piece
from squall.runtime.messages import Invoke
from squall.store import JobStore


@pytest.fixture
def deployment(s3: S3Server, bucket: str, tmp_path: Path, linear_model: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Deployment]:
    yield from deploy(s3, bucket, tmp_path, linear_model, monkeypatch)


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_predictions_made_by_squall_workers_on_sqs_equal_the_models_own_call(fmt, deployment, linear_model):
    frame = upload_inputs(deployment, fmt)
    deployment.workers.start(2)
    result = squall.run(deployment.spec(fmt))
    assert (result.state, result.rows_in, result.rows_out, result.error_rows) == ("SUCCEEDED", 5_000, 5_000, 0)
    assert_predictions_equal_the_model(deployment, frame, linear_model)
    task = deployment.fs.cat_file(f"{deployment.bucket}/out/_squall/{result.job_id}/task.json")
    assert b"squall-test-secret" not in task, "a credential was written into the job's task"
    logs = deployment.workers.log(0) + deployment.workers.log(1)
    assert logs.count("finished message") == result.chunks, "each chunk ran once, on the workers"
    assert deployment.queues.depth(deployment.queues.url) == 0 and deployment.queues.depth(deployment.queues.results_url) == 0


def ids_spec(deployment: Deployment, model: str, **fields: object) -> squall.JobSpec:
    """A job over the ids object on the bucket, with a fault model from tests/faultmodels.py (code the workers import)."""
    return deployment.spec(
        "parquet", model=model, input=[f"s3://{deployment.bucket}/in/ids.parquet"], features=["id_copy"], method="predict",
        trust_model=False, **fields,
    )


def cli_ids_job(deployment: Deployment, job_id: str, chunk_rows: int, batch_size: int, timeout: int) -> subprocess.Popen[str]:
    """``squall run`` on the sqs backend in its own process (a coordinator a test can kill or cancel), over the ids
    object with the ``steady`` fault model on two workers."""
    return subprocess.Popen(
        [*SQUALL, "run", "--job-id", job_id, "--backend", "sqs", "--queue", deployment.queues.name, "--model",
         "faultmodels:steady", "--input", f"s3://{deployment.bucket}/in/ids.parquet", "--output",
         f"s3://{deployment.bucket}/out", "--key", "id", "--features", "id_copy", "--workers", "2", "--chunk-rows",
         str(chunk_rows), "--batch-size", str(batch_size), "--timeout", str(timeout), "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def invocation_outcomes(job_id: str) -> list[str]:
    with JobStore.at(None) as store:
        return [record.outcome for record in store.invocations(job_id)]


def committed_ids(deployment: Deployment) -> pd.DataFrame:
    assert_committed_exactly(deployment.fs, f"{deployment.bucket}/out")
    return read_s3_output(deployment.fs, f"{deployment.bucket}/out").sort_values("id", ignore_index=True)


def test_workers_sigkilled_at_random_with_a_message_in_hand_lose_nothing_and_every_row_is_committed_once(deployment, monkeypatch):
    rows = 4_000
    upload_ids(deployment.fs, f"{deployment.bucket}/in/ids.parquet", rows)
    monkeypatch.setenv("FAULT_SLEEP", "0.05")  # each batch of 50 rows: a chunk takes about a quarter second
    deployment.workers.start(2)
    spec = ids_spec(deployment, "faultmodels:steady", chunk_rows=250, batch_size=50, timeout=4, split_after=3)
    outcome: dict[str, squall.JobResult] = {}
    coordinator = threading.Thread(target=lambda: outcome.setdefault("result", squall.run(spec)))
    coordinator.start()
    rng = random.Random(7)
    landed = 0
    for _ in range(3):
        victim = rng.randrange(len(deployment.workers.processes))
        time.sleep(rng.uniform(0.0, 0.5))
        if coordinator.is_alive():
            landed += deployment.workers.kill_when_in_flight(victim)
            deployment.workers.replace(victim)
    coordinator.join(timeout=240)
    assert landed >= 2, "the kills did not land while a worker held a message"
    result = outcome["result"]
    assert (result.state, result.rows_in, result.rows_out, result.error_rows) == ("SUCCEEDED", rows, rows, 0)
    got = committed_ids(deployment)
    assert got["id"].tolist() == list(range(rows)), "a row is missing or doubled"
    np.testing.assert_array_equal(got["prediction"].to_numpy(), got["id"].to_numpy() * 2.0)
    outcomes = invocation_outcomes(result.job_id)
    assert outcomes.count("timeout") >= landed, "a killed worker's attempt was not abandoned and retried"


def test_a_message_run_again_after_its_job_ended_adds_no_row_a_reader_of_the_output_sees(deployment, monkeypatch):
    rows = 1_000
    upload_ids(deployment.fs, f"{deployment.bucket}/in/ids.parquet", rows)
    monkeypatch.setenv("FAULT_SLEEP", "0.05")
    deployment.workers.start(1)
    spec = ids_spec(deployment, "faultmodels:steady", chunk_rows=250, batch_size=50, workers=1, timeout=3)
    outcome: dict[str, squall.JobResult] = {}
    coordinator = threading.Thread(target=lambda: outcome.setdefault("result", squall.run(spec)))
    coordinator.start()
    assert deployment.workers.kill_when_in_flight(0), "the kill did not land while the worker held a message"
    deployment.workers.replace(0)
    coordinator.join(timeout=180)
    result = outcome["result"]
    assert (result.state, result.rows_out) == ("SUCCEEDED", rows)
    finished_in_job = deployment.workers.every_log().count("finished message")
    assert finished_in_job == result.chunks, "the killed worker's message ran again before its job ended"
    # SQS delivers the killed worker's message again after its visibility timeout (10 s): a worker runs the
    # abandoned attempt and writes its file, now that the job is final.
    wait_until(lambda: deployment.workers.every_log().count("finished message") > finished_in_job,
               "the abandoned message to be delivered again and run")
    out = f"{deployment.bucket}/out"
    late = [p for p in deployment.fs.find(out) if "-a1." in p]
    assert late and all("/_tmp/" in p for p in late), f"the late attempt wrote {late}, where a reader looks"
    manifest = json.loads(deployment.fs.cat_file(f"{out}/_manifest.json"))
    visible = sorted(p.rsplit("/", 1)[-1] for p in deployment.fs.ls(out, detail=False) if "/part-" in p)
    assert visible == sorted(part["path"] for part in manifest["parts"])
    assert read_s3_output(deployment.fs, out).sort_values("id")["id"].tolist() == list(range(rows))


def test_a_coordinator_sigkilled_with_messages_in_flight_is_finished_by_squall_resume(deployment, monkeypatch):
    rows = 4_000
    upload_ids(deployment.fs, f"{deployment.bucket}/in/ids.parquet", rows)
    monkeypatch.setenv("FAULT_SLEEP", "0.05")
    deployment.workers.start(2)
    job_id = "sqs-resume"
    coordinator = cli_ids_job(deployment, job_id, chunk_rows=250, batch_size=50, timeout=10)
    wait_until(lambda: deployment.workers.every_log().count("finished message") >= 3 or coordinator.poll() is not None,
               "the job to commit a few chunks")
    wait_until(lambda: deployment.workers.in_flight(0) or deployment.workers.in_flight(1), "a message in a worker's hands")
    coordinator.send_signal(signal.SIGKILL)
    coordinator.wait(timeout=10)
    assert coordinator.returncode == -signal.SIGKILL, "the coordinator finished before it was killed"
    # A killed coordinator leaves its leases as they were: the attempts it had dispatched and not yet committed.
    with sqlite3.connect(Path(os.environ["SQUALL_HOME"]) / "squall.db") as db:
        leased = db.execute("SELECT COUNT(*) FROM chunks WHERE job_id = ? AND state = 'leased'", (job_id,)).fetchone()[0]
    assert leased > 0, "no message was in flight when the coordinator died"
    with JobStore.at(None) as store:
        assert store.job(job_id).state == "RUNNING"
    resumed = run_cli("resume", job_id, "-q")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    with JobStore.at(None) as store:
        assert store.job(job_id).state == "SUCCEEDED"
    got = committed_ids(deployment)
    assert got["id"].tolist() == list(range(rows)), "a row is missing or doubled"
    np.testing.assert_array_equal(got["prediction"].to_numpy(), got["id"].to_numpy() * 2.0)


def test_an_sqs_job_is_redriven_after_the_model_is_fixed_and_status_and_report_show_what_the_workers_did(
    deployment, monkeypatch, tmp_path
):
    rows = 3_000
    upload_ids(deployment.fs, f"{deployment.bucket}/in/ids.parquet", rows, row_group_size=500)
    flag = tmp_path / "bug"
    flag.write_text("on")
    monkeypatch.setenv("FAULT_FLAG", str(flag))  # the workers see it: they start after this
    deployment.workers.start(2)
    spec = ids_spec(deployment, "faultmodels:broken_until_fixed", chunk_rows=500, max_attempts=2, max_dead_chunks=2,
                    backoff_base=0.0)
    first = squall.run(spec)
    assert (first.state, first.rows_out, first.dead_chunks) == ("PARTIAL", rows - 500, 1)
    flag.unlink()  # the model is fixed; the warm workers run the dead chunk again
    redriven = run_cli("redrive", first.job_id, "--max-attempts", "3", "-q")
    assert redriven.returncode == 0 and f"SUCCEEDED {rows} rows" in redriven.stdout, redriven.stdout + redriven.stderr
    got = committed_ids(deployment)
    assert got["id"].tolist() == list(range(rows))
    np.testing.assert_array_equal(got["prediction"].to_numpy(), got["id"].to_numpy() * 2.0)
    status = json.loads(run_cli("status", first.job_id, "--json").stdout)
    assert (status["state"], status["rows_out"]) == ("SUCCEEDED", rows)
    report = json.loads(run_cli("report", first.job_id, "--format", "json").stdout)
    outcomes = sorted(i["outcome"] for i in report["invocations"])
    assert outcomes == sorted(["ok"] * 6 + ["error"] * 2), outcomes  # six chunks, the bad one failing twice first
    logged = deployment.workers.every_log()
    assert logged.count("finished message") == len(outcomes), "an invocation did not run on the sqs workers"


def test_an_sqs_job_cancelled_from_the_cli_keeps_its_committed_parts_and_resume_finishes_it(deployment, monkeypatch):
    rows = 10_000
    upload_ids(deployment.fs, f"{deployment.bucket}/in/ids.parquet", rows, row_group_size=500)
    monkeypatch.setenv("FAULT_SLEEP", "0.2")  # a chunk of 500 rows in batches of 100: about a second
    deployment.workers.start(2)
    coordinator = cli_ids_job(deployment, "stop-me", chunk_rows=500, batch_size=100, timeout=60)
    committed = lambda: deployment.fs.glob(f"{deployment.bucket}/out/part-*")  # noqa: E731 (attempts lie in _tmp/)
    wait_until(lambda: len(committed()) >= 2 or coordinator.poll() is not None, "the job to commit two chunks")
    assert coordinator.poll() is None, "the job finished before it was cancelled"
    assert run_cli("cancel", "stop-me").returncode == 0
    output, _ = coordinator.communicate(timeout=60)
    assert coordinator.returncode == 130, output
    status = json.loads(run_cli("status", "stop-me", "--json").stdout)
    assert status["state"] == "CANCELLED" and 0 < status["rows_out"] < rows, status
    assert not deployment.fs.exists(f"{deployment.bucket}/out/_SUCCESS")
    # Messages the cancelled coordinator had sent still run: their reports reach the resumed one, which did not
    # lease those attempts, and discards them.
    resumed = run_cli("resume", "stop-me", "-q")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    got = committed_ids(deployment)
    assert got["id"].tolist() == list(range(rows)), "a row is missing or doubled"
    np.testing.assert_array_equal(got["prediction"].to_numpy(), got["id"].to_numpy() * 2.0)


def test_rows_the_model_raises_on_are_bisected_into_error_rows_and_every_other_row_is_predicted(deployment):
    rows = 3_000
    upload_ids(deployment.fs, f"{deployment.bucket}/in/ids.parquet", rows)
    deployment.workers.start(2)
    result = squall.run(ids_spec(deployment, "faultmodels:raise_on_some", chunk_rows=500, max_error_rate=0.01))
    poison = [i for i in range(rows) if i % 1000 == 7]
    assert (result.state, result.rows_out, result.error_rows) == ("PARTIAL", rows - len(poison), len(poison))
    got = committed_ids(deployment)
    assert got["id"].tolist() == [i for i in range(rows) if i not in poison]
    errors = read_s3_output(deployment.fs, f"{deployment.bucket}/out/_errors")
    assert sorted(errors["_offset"]) == poison and set(errors["step"]) == {"predict"}
    assert set(errors["error_type"]) == {"ValueError"}


def test_a_row_that_hangs_is_isolated_by_timeouts_and_splits_while_every_other_row_is_committed(deployment, monkeypatch):
    rows, group, bad = 64, 8, 42
    deployment.queues.set_max_receives(1)  # a hung message is not run again after its worker ended over the time limit
    upload_ids(deployment.fs, f"{deployment.bucket}/in/ids.parquet", rows, row_group_size=group)
    monkeypatch.setenv("FAULT_ID", str(bad))
    # A spare consumer: a dispatch's time counts from when it is sent, so one must not wait for a consumer that restarts;
    # and a time limit that leaves a cold consumer (a fresh process importing pandas and pyarrow) time to start.
    deployment.workers.start(3)
    spec = ids_spec(deployment, "faultmodels:hang_on_row", chunk_rows=group, batch_size=group, timeout=10, split_after=1,
                    max_dead_chunks=1, max_error_rate=0.02, backoff_base=0.0)
    result = squall.run(spec)
    dead = squall.api.dead_letters(result.job_id)
    assert (result.state, result.rows_out) == ("PARTIAL", rows - 1), (result.message, dead)
    assert len(dead) == 1 and dead[0].est_rows == 1, dead
    assert dead[0].pieces[0]["start"] * group + dead[0].pieces[0]["row_offset"] == bad, dead
    got = committed_ids(deployment)
    assert got["id"].tolist() == [i for i in range(rows) if i != bad]
    assert "ran past its 10 s time limit" in deployment.workers.every_log(), "no worker ended itself over the time limit"
    assert invocation_outcomes(result.job_id).count("timeout") >= 4, "the chunk was not split down to its bad row"


def test_messages_no_worker_can_run_end_in_the_sqs_dead_letter_queue_and_squall_dlq_says_why(deployment):
    queues = deployment.queues
    queues.set_max_receives(2)
    queues.client.send_message(QueueUrl=queues.url, MessageBody="hello, I am not squall's")
    chunk = Chunk("job-x", 3, "parquet", (Piece(f"s3://{deployment.bucket}/in/ids.parquet", "rowgroups", 0, 1),), 250, 1_000)
    # A dispatch whose job task is not where its job's output says (never written): refused, nothing run.
    unreadable = Dispatch("job-x", task_uri(f"s3://{deployment.bucket}/out", "job-x"), 0, Invoke(chunk, 1), queues.results_url)
    queues.client.send_message(QueueUrl=queues.url, MessageBody=unreadable.to_json())
    deployment.workers.start(1)
    wait_until(lambda: queues.depth(queues.dlq_url) == 2, "both messages to reach the dead-letter queue", timeout=90)
    log = deployment.workers.log(0)
    assert log.count("refused message") >= 4, log  # each received twice (maxReceiveCount), each time refused
    assert "finished message" not in log and queues.depth(queues.results_url) == 0, "a refused message was run"
    shown = run_cli("dlq", "--queue", queues.name, "--json")
    assert shown.returncode == 0, shown.stderr
    listed = {entry["what"]: entry["reason"] for entry in json.loads(shown.stdout)}
    assert listed.keys() == {"not a squall dispatch", "job job-x chunk 3 attempt 1"}, listed
    assert "not JSON" in listed["not a squall dispatch"]
    assert "cannot read the task of job job-x" in listed["job job-x chunk 3 attempt 1"]
    assert queues.depth(queues.dlq_url) == 2, "listing the dead-letter queue took messages off it"
    table = run_cli("dlq", "--queue", queues.name)
    assert "2 message(s) in the SQS dead-letter queue" in table.stdout and "not JSON" in table.stdout, table.stdout


def test_squall_worker_on_sigterm_finishes_the_message_in_hand_reports_it_and_exits_0(deployment, monkeypatch):
    rows = 1_000
    upload_ids(deployment.fs, f"{deployment.bucket}/in/ids.parquet", rows)
    monkeypatch.setenv("FAULT_SLEEP", "1.0")  # each batch of 250 rows takes a second
    deployment.workers.start(1)
    spec = ids_spec(deployment, "faultmodels:steady", chunk_rows=500, batch_size=250, workers=1, timeout=60)
    outcome: dict[str, squall.JobResult] = {}
    coordinator = threading.Thread(target=lambda: outcome.setdefault("result", squall.run(spec)))
    coordinator.start()
    wait_until(lambda: deployment.workers.in_flight(0), "the worker to take a message")
    worker = deployment.workers.processes[0]
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 0
    log = deployment.workers.log(0)
    assert log.count("finished message") == 1 and not deployment.workers.in_flight(0), log
    deployment.workers.replace(0)  # the job goes on with a fresh worker
    coordinator.join(timeout=180)
    result = outcome["result"]
    assert (result.state, result.rows_out) == ("SUCCEEDED", rows)
    assert committed_ids(deployment)["id"].tolist() == list(range(rows))
    assert invocation_outcomes(result.job_id) == ["ok", "ok"], "the message in hand at SIGTERM was not finished"


def test_paths_on_the_coordinator_s_disk_are_refused_before_any_work_unless_the_workers_share_them(tmp_path):
    with pytest.raises(ValueError, match="sqs-shared-filesystem"):
        squall.JobSpec.model_validate({"model": str(tmp_path / "m.joblib"), "input": ["s3://b/in"], "output": "s3://b/out",
                                       "backend": "sqs", "backend_options": {"sqs": {"queue": "preds"}}})
    with pytest.raises(ValueError, match="--queue"):
        squall.JobSpec.model_validate({"model": "s3://b/m.joblib", "input": ["s3://b/in"], "output": "s3://b/out", "backend": "sqs"})
    backend = SqsBackend(SqsOptions(queue="preds"))
    with pytest.raises(squall.errors.InputError, match="cannot reach"):
        backend.check_reach([(str(tmp_path / "in.parquet"), 10)], "s3://b/out")
    backend.check_reach([("s3://b/in.parquet", 10)], "s3://b/out")
    SqsBackend(SqsOptions(queue="preds", shared_filesystem=True)).check_reach([(str(tmp_path / "x"), 1)], str(tmp_path / "out"))


@pytest.mark.parametrize("body, reason", [
    ("not json", "not JSON"),
    ('{"kind": "squall.dispatch", "version": 99}', "version 99"),
    ('{"kind": "squall.dispatch", "version": 1, "job_id": "j"}', "missing field"),
    ('{"kind": "squall.reply", "version": 1}', "not a squall.dispatch message"),
])
def test_a_message_that_is_not_a_dispatch_this_worker_runs_is_refused_saying_why(body, reason):
    with pytest.raises(squall.errors.MessageRefused, match=reason):
        Dispatch.parse(body)
