"""The Ray backend keeps every guarantee of the local one: same predictions, and nothing lost when actors die.

A module-wide Ray runtime (`ray.init(num_cpus=2)`) serves the tests that join
a running Ray; the CLI test lets squall start and stop a local Ray itself.
Ray declares two GPUs that this machine does not have (Ray lets any machine
declare resources): enough to prove that `ray_num_gpus` reaches each
worker's device placement. Running on a real GPU is checked on a lent
device, not here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest
import ray
from support import TESTS_DIR
from support.cli import run_cli
from support.data import ids_dataset, make_frame, read_output
from support.expect import expected_proba
from support.faults import assert_exact_output, ids_spec, run_killing_workers
from support.s3 import (
    assert_committed_exactly,
    filesystem,
    read_s3_output,
    upload_frame,
)
from support.s3server import CREDENTIALS

import squall
from squall import api
from squall.resolve import ResolvedJob, backend_for


@pytest.fixture(scope="module", autouse=True)
def ray_runtime():
    """One Ray for the module; workers import the test models from tests/."""
    src = str(Path(squall.__file__).resolve().parents[1])
    ray.init(
        num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([str(TESTS_DIR), src])}},
    )
    yield
    ray.shutdown()


def actor_pids(older_than_s: float = 0.0) -> list[int]:
    """Processes running squall's worker actors (those started at least ``older_than_s`` ago)."""
    pids = []
    for process in psutil.process_iter(["pid", "cmdline", "create_time"]):
        command = " ".join(process.info["cmdline"] or [])
        if command.startswith("ray::ActorWorker") and time.time() - process.info["create_time"] >= older_than_s:
            pids.append(process.info["pid"])
    return pids


def on_ray(spec: squall.JobSpec, **env: str) -> squall.JobSpec:
    ray = {**spec.backend_options.get("ray", {}), **({"runtime_env": {"env_vars": env}} if env else {})}
    values = {**spec.model_dump(exclude_unset=True), "backend": "ray", "backend_options": {**spec.backend_options, "ray": ray}}
    return squall.JobSpec.model_validate(values)


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_predictions_on_ray_equal_the_model_for_every_format(fmt, dataset, linear_model, tmp_path):
    folder, frame = dataset(fmt, rows=2_500, files=2)
    spec = squall.JobSpec(
        model=str(linear_model), input=[str(folder)], output=str(tmp_path / "out"), key=["id"],
        method="predict_proba", workers=2, chunk_rows=400, batch_size=300, backend="ray",
    )
    result = squall.run(spec)
    assert (result.state, result.rows_in, result.rows_out, result.error_rows) == ("SUCCEEDED", 5_000, 5_000, 0)
    assert (result.cold_starts, result.worker_starts) == (2, 2)
    got = read_output(tmp_path / "out").set_index("id").sort_index()
    want = expected_proba(linear_model, frame)
    assert list(got.columns) == list(want.columns) and got.index.equals(want.index)
    np.testing.assert_allclose(got.to_numpy(), want.to_numpy(), rtol=1e-9, atol=1e-12)
    assert (tmp_path / "out" / "_SUCCESS").exists()
    assert {r.worker for r in api.report(result.job_id).invocations} <= {0, 1}
    assert not actor_pids(), "every actor is released at the end"


def test_actors_read_ranges_from_and_commit_parts_to_an_object_store(s3, bucket, linear_model):
    fs = filesystem(s3)
    frames = [make_frame(2_500, seed=i, start=i * 2_500) for i in range(2)]
    for index, frame in enumerate(frames):
        upload_frame(fs, frame, f"{bucket}/in/data-{index}.parquet", "parquet")
    spec = squall.JobSpec(
        model=str(linear_model), input=[f"s3://{bucket}/in/*.parquet"], output=f"s3://{bucket}/out", key=["id"],
        method="predict_proba", workers=2, chunk_rows=700, endpoint_url=s3.endpoint, backend="ray",
        ray_runtime_env={"env_vars": CREDENTIALS},  # type: ignore[call-arg]  # the flat spelling a spec file may use
    )
    result = squall.run(spec)
    assert (result.state, result.rows_out) == ("SUCCEEDED", 5_000)
    assert_committed_exactly(fs, f"{bucket}/out")
    got = read_s3_output(fs, f"{bucket}/out").set_index("id").sort_index()
    want = expected_proba(linear_model, pd.concat(frames, ignore_index=True))
    np.testing.assert_allclose(got[want.columns].to_numpy(), want.to_numpy(), rtol=1e-9, atol=1e-12)
    input_gets = s3.log.object_gets(f"/{bucket}/in/")
    assert len(input_gets) >= result.chunks and all(status == 206 for _, status in input_gets)


def test_sigkilling_random_actors_every_half_second_loses_and_duplicates_nothing(tmp_path):
    ids_dataset(tmp_path / "in", 40_000, files=2, row_group_size=500)
    predicted = tmp_path / "predicted-by"  # the steady model notes its pid on every call
    spec = on_ray(
        ids_spec(tmp_path, "steady", workers=2, chunk_rows=1_000, batch_size=250, max_attempts=50, split_after=50, backoff_base=0.05),
        FAULT_SLEEP="0.05", FAULT_PIDS=str(predicted),
    )

    def working_actors() -> list[int]:
        """Actors that have loaded the model and predicted: a worker killed again and again while it starts is
        taken for a model that cannot load, and that is another test."""
        worked = set(map(int, predicted.read_text().split())) if predicted.exists() else set()
        return [pid for pid in actor_pids() if pid in worked]

    result, kills = run_killing_workers(spec, seed=11, max_kills=8, every_s=0.7, victims=working_actors)
    assert len(kills) >= 4
    assert result.state == "SUCCEEDED" and result.rows_out == 40_000
    assert result.worker_starts >= 2 + len(kills) - 1
    assert_exact_output(tmp_path / "out", set(range(40_000)))


def test_a_hanging_row_on_ray_is_isolated_by_timeouts_kills_and_splits(tmp_path):
    ids_dataset(tmp_path / "in", 2_000, row_group_size=2_000)
    spec = on_ray(
        ids_spec(tmp_path, "hang_on_row", chunk_rows=500, batch_size=50, timeout=4, split_after=1, max_dead_chunks=1, backoff_base=0.0),
        FAULT_ID="777",
    )
    result = squall.run(spec)
    assert (result.state, result.rows_out, result.dead_chunks) == ("PARTIAL", 1_999, 1)
    assert_exact_output(tmp_path / "out", set(range(2_000)) - {777})
    (dead,) = api.dead_letters(result.job_id)
    assert dead.est_rows == 1 and dead.attempts[-1]["outcome"] == "timeout"


def test_an_actor_over_its_memory_limit_is_killed_and_its_chunk_split(tmp_path):
    ids_dataset(tmp_path / "in", 1_000, row_group_size=1_000)
    spec = on_ray(
        ids_spec(tmp_path, "hog_on_row", chunk_rows=250, batch_size=50, memory=600, split_after=1, max_dead_chunks=1, backoff_base=0.0),
        FAULT_ID="500",
    )
    result = squall.run(spec)
    assert (result.state, result.rows_out, result.dead_chunks) == ("PARTIAL", 999, 1)
    assert_exact_output(tmp_path / "out", set(range(1_000)) - {500})
    (dead,) = api.dead_letters(result.job_id)
    assert dead.attempts[-1]["outcome"] == "memory" and "600 MB memory limit" in str(dead.attempts[-1]["error"])


@pytest.mark.parametrize("model", ["abort_on_row", "exit_on_row"])
def test_a_row_that_ends_the_actor_is_isolated_by_splits_and_rows_that_raise_are_bisected(model, tmp_path):
    ids_dataset(tmp_path / "in", 3_000, row_group_size=500)
    ending = on_ray(
        ids_spec(tmp_path, model, chunk_rows=500, batch_size=100, split_after=1, max_dead_chunks=1, backoff_base=0.0),
        FAULT_ID="1234",
    )
    result = api.run(ending)
    assert (result.state, result.rows_out, result.dead_chunks) == ("PARTIAL", 2_999, 1)
    (dead,) = api.dead_letters(result.job_id)
    assert dead.est_rows == 1
    assert ("Ray actor died" if model == "abort_on_row" else "worker crashed: SystemExit") in str(dead.attempts[-1]["error"])
    raising = on_ray(ids_spec(tmp_path, "raise_on_some", chunk_rows=500, batch_size=100, max_error_rate=0.01, overwrite=True))
    result = api.run(raising)
    assert (result.state, result.rows_out, result.error_rows) == ("PARTIAL", 2_997, 3)


def test_redrive_on_ray_after_fixing_the_model_turns_partial_into_succeeded(tmp_path):
    ids_dataset(tmp_path / "in", 3_000, row_group_size=500)
    flag = tmp_path / "bug"
    flag.write_text("on")
    spec = on_ray(
        ids_spec(tmp_path, "broken_until_fixed", chunk_rows=500, max_attempts=2, max_dead_chunks=2, backoff_base=0.0),
        FAULT_FLAG=str(flag),
    )
    result = squall.run(spec)
    assert (result.state, result.dead_chunks) == ("PARTIAL", 1)
    flag.unlink()
    redriven = api.redrive(result.job_id)
    assert (redriven.state, redriven.rows_out, redriven.dead_chunks) == ("SUCCEEDED", 3_000, 0)
    assert_exact_output(tmp_path / "out", set(range(3_000)))


def test_the_pool_grows_to_ray_max_workers_while_chunks_wait(tmp_path):
    ids_dataset(tmp_path / "in", 12_000, row_group_size=500)
    spec = on_ray(ids_spec(tmp_path, "steady", workers=1, ray_max_workers=2, chunk_rows=500), FAULT_SLEEP="0.3")
    result = squall.run(spec)
    assert result.state == "SUCCEEDED" and result.rows_out == 12_000
    assert result.worker_starts == 2
    assert {r.worker for r in api.report(result.job_id).invocations} == {0, 1}


def test_the_pool_grows_by_one_actor_at_a_time_and_gives_idle_actors_back_down_to_workers(tmp_path):
    from squall.plan.planner import make_plan

    ids_dataset(tmp_path / "in", 1_000)
    spec = on_ray(ids_spec(tmp_path, "steady", workers=1, ray_max_workers=3, ray_num_cpus=0.5))
    task = ResolvedJob.of(spec).task(make_plan(spec, "pool"))
    backend = backend_for(spec, tmp_path / "logs")

    def settle(idle: int) -> None:
        deadline = time.time() + 60
        while len(backend.idle()) != idle and time.time() < deadline:
            backend.wait(0.2)
        assert len(backend.idle()) == idle

    try:
        backend.start(task.model, 1)
        backend.configure(task)
        settle(1)
        backend.scale(waiting=5)
        backend.scale(waiting=5)  # one actor at a time: nothing more while one is starting
        settle(2)
        backend.scale(waiting=5)
        settle(3)
        backend.scale(waiting=5)
        assert len(backend.idle()) == 3 and backend.worker_starts() == 3, "never past ray_max_workers"
        for _ in range(3):
            backend.scale(waiting=0)
        assert len(backend.idle()) == 1
        deadline = time.time() + 15
        while len(actor_pids()) > 1 and time.time() < deadline:
            time.sleep(0.2)
        assert len(actor_pids()) == 1, "the actors given back are gone"
    finally:
        backend.shutdown()


def test_ray_num_gpus_gives_each_actor_its_own_gpu_and_places_the_model_on_it(tmp_path):
    ids_dataset(tmp_path / "in", 4_000, row_group_size=500)
    seen = tmp_path / "seen"
    seen.mkdir()
    spec = ids_spec(tmp_path, "visible_gpu_once_all_run", workers=2, chunk_rows=500, ray_num_gpus=1, ray_num_cpus=0.5)
    spec = on_ray(spec, FAULT_DIR=str(seen), FAULT_WORKERS="2")
    result = squall.run(spec)
    assert result.state == "SUCCEEDED"
    # Two actor processes ran, each seeing a GPU of its own.
    seen_by = {name.name.split("-pid-")[1]: name.read_text() for name in seen.glob("gpu-*")}
    assert len(seen_by) == 2 and sorted(seen_by.values()) == ["0", "1"]
    assert set(read_output(tmp_path / "out")["prediction"]) == {0.0, 1.0}
    assert json.loads(api.report(result.job_id).job.task)["model"]["device"] == "cuda:0"


def test_a_ray_job_whose_coordinator_is_killed_resumes_on_ray(tmp_path):
    ids_dataset(tmp_path / "in", 20_000, files=2, row_group_size=500)
    address = ray.get_runtime_context().gcs_address
    # A second driver's actors get only its runtime_env: they find the test models through it.
    runtime_env = {"env_vars": {"FAULT_SLEEP": "0.2", "PYTHONPATH": os.environ["PYTHONPATH"]}}
    args = [
        "run", "--model", "faultmodels:steady", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
        "--key", "id", "--features", "id_copy", "--chunk-rows", "500", "--workers", "2", "--job-id", "cut",
        "--backend", "ray", "--ray-address", address, "--ray-runtime-env", json.dumps(runtime_env),
    ]
    from support.cli import SQUALL

    coordinator = subprocess.Popen([*SQUALL, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((tmp_path / "out").glob("part-*"))) < 5:
        time.sleep(0.2)
    coordinator.send_signal(signal.SIGKILL)
    _, stderr = coordinator.communicate()
    assert 5 <= len(list((tmp_path / "out").glob("part-*"))) < 40, stderr
    resumed = run_cli("resume", "cut")
    assert resumed.returncode == 0, resumed.stderr
    assert_exact_output(tmp_path / "out", set(range(20_000)))
