"""squall on Ray beyond one runtime in this process: a local Ray it starts and stops itself, and a
two-node cluster (`ray.cluster_utils.Cluster`, both nodes on this machine) that loses a node mid-job."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import ray
from ray.cluster_utils import Cluster
from support import TESTS_DIR
from support.cli import SQUALL, run_cli
from support.data import ids_dataset, read_output
from support.expect import expected_proba
from support.faults import assert_exact_output, ids_spec

import squall
from squall.errors import UsageError


def ray_daemons() -> set[int]:
    """Pids of Ray's node daemons (raylet, GCS) running on this machine."""
    found = set()
    for process in psutil.process_iter(["pid", "cmdline"]):
        command = " ".join(process.info["cmdline"] or [])
        if "raylet/raylet" in command or "gcs_server" in command:
            found.add(process.info["pid"])
    return found


@pytest.fixture()
def two_nodes():
    """A head with one CPU and a second node with two; this process is a driver of it."""
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    second = cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    yield cluster, second
    if ray.is_initialized():
        ray.shutdown()
    cluster.shutdown()


def test_backend_ray_from_the_cli_starts_a_local_ray_predicts_exactly_and_stops_it(dataset, linear_model, tmp_path):
    before = ray_daemons()
    folder, frame = dataset("parquet", rows=3_000, files=2)
    result = run_cli(
        "run", "--model", str(linear_model), "--input", str(folder), "--output", str(tmp_path / "out"), "--key", "id",
        "--method", "predict_proba", "--workers", "2", "--chunk-rows", "500", "--backend", "ray", "-q",
    )
    assert result.returncode == 0, result.stderr
    assert "SUCCEEDED 6000 rows" in result.stdout
    got = read_output(tmp_path / "out").set_index("id").sort_index()
    np.testing.assert_allclose(got.to_numpy(), expected_proba(linear_model, frame).to_numpy(), rtol=1e-9, atol=1e-12)
    deadline = time.monotonic() + 30
    while not ray_daemons() <= before:  # the daemons exit a moment after `ray.shutdown()` returns
        assert time.monotonic() < deadline, "the local Ray squall started is stopped at the end"
        time.sleep(0.1)


def test_a_worker_no_node_of_a_local_ray_can_host_is_refused_before_any_work(tmp_path):
    ids_dataset(tmp_path / "in", 1_000)
    result = run_cli(
        "run", "--model", "faultmodels:steady", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
        "--key", "id", "--features", "id_copy", "--backend", "ray", "--ray-num-gpus", "4",
    )
    assert result.returncode == 2
    assert "no node of the Ray cluster can host a worker asking for 1 CPU, 4 GPU (the largest has 2 CPU, 0 GPU)" in result.stderr
    assert "lower ray_num_cpus, ray_num_gpus or ray_memory" in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_two_node_cluster_that_loses_a_node_mid_job_finishes_with_every_row(two_nodes, tmp_path):
    cluster, second = two_nodes
    src = str(Path(squall.__file__).resolve().parents[1])
    ray.init(address=cluster.address, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([str(TESTS_DIR), src]), "FAULT_SLEEP": "0.2"}})
    ids_dataset(tmp_path / "in", 30_000, files=3, row_group_size=500)
    spec = ids_spec(tmp_path, "steady", workers=3, chunk_rows=500, backend="ray", max_attempts=5, backoff_base=0.05)
    removed = threading.Event()

    def remove_second_node() -> None:
        deadline = time.time() + 120
        while time.time() < deadline and len(list((tmp_path / "out").glob("part-*"))) < 10:
            time.sleep(0.1)
        cluster.remove_node(second)
        removed.set()

    remover = threading.Thread(target=remove_second_node)
    remover.start()
    result = squall.run(spec)
    remover.join()
    assert removed.is_set()
    assert result.state == "SUCCEEDED" and result.rows_out == 30_000
    assert_exact_output(tmp_path / "out", set(range(30_000)))
    lost = [r for r in squall.api.report(result.job_id).invocations if r.outcome == "lost"]
    assert lost, "the node was removed while its actors held chunks"
    assert result.worker_starts > 3


def _can_unshare() -> bool:
    return shutil.which("unshare") is not None and subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _can_unshare(), reason="needs `unshare -m` (a private mount namespace) to give the driver a path no node sees")
def test_an_input_only_the_driver_sees_is_refused_on_a_cluster_before_any_work(two_nodes, tmp_path):
    cluster, _ = two_nodes
    ids_dataset(tmp_path / "staging", 2_000)
    private = tmp_path / "private"
    private.mkdir()
    run = [
        *SQUALL, "run", "--model", "faultmodels:steady", "--input", str(private), "--output", str(tmp_path / "out"),
        "--key", "id", "--features", "id_copy", "--backend", "ray", "--ray-address", cluster.address,
    ]
    # The driver alone mounts a fresh filesystem over `private`: the nodes see an empty folder there.
    script = f"mount -t tmpfs squall-private {private} && cp {tmp_path / 'staging'}/* {private}/ && exec \"$@\""
    result = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", *run], capture_output=True, text=True, timeout=240)
    assert result.returncode == 2, result.stderr
    assert "cannot reach the job's files" in result.stderr and "ids-0.parquet does not exist there" in result.stderr
    assert "s3://" in result.stderr
    assert not list((tmp_path / "out").glob("part-*"))


def test_a_worker_a_joined_cluster_never_places_fails_the_job_with_the_reason_and_resume_finishes_it(tmp_path):
    """Regression (issue 16, defect 8): an error that stops the coordinator (here Ray's placement timeout) marked
    the job CANCELLED; it is FAILED with the reason, and `squall resume` finishes it once a node can host a worker."""
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        src = str(Path(squall.__file__).resolve().parents[1])
        ray.init(address=cluster.address, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([str(TESTS_DIR), src])}})
        ids_dataset(tmp_path / "in", 2_000, row_group_size=500)
        spec = ids_spec(tmp_path, "steady", workers=1, chunk_rows=500, backend="ray", ray_num_cpus=2,
                        ray_placement_timeout=15, job_id="never-placed")
        with pytest.raises(UsageError, match="no Ray worker asking for 2 CPU was placed in 15 s"):
            squall.run(spec)
        job = squall.status("never-placed").job
        assert job.state == "FAILED", job.message
        assert "was placed in 15 s" in (job.message or "") and "`squall resume never-placed` finishes it" in (job.message or "")
        assert not list((tmp_path / "out").glob("part-*"))

        cluster.add_node(num_cpus=2)
        cluster.wait_for_nodes()
        result = squall.resume("never-placed")
        assert (result.state, result.rows_out) == ("SUCCEEDED", 2_000)
        assert_exact_output(tmp_path / "out", set(range(2_000)))
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()


@pytest.mark.skipif(not _can_unshare(), reason="needs `unshare -m` (a private mount namespace) to give the driver a path no node sees")
def test_a_resumed_ray_job_whose_pending_chunks_read_a_file_only_the_driver_has_is_refused(two_nodes, tmp_path):
    """`squall resume` probes the Ray nodes again: the inputs it still has to read may have moved since the run."""
    cluster, _ = two_nodes
    ids_dataset(tmp_path / "in", 4_000, files=4, row_group_size=500)
    src = str(Path(squall.__file__).resolve().parents[1])
    runtime_env = {"env_vars": {"PYTHONPATH": os.pathsep.join([str(TESTS_DIR), src]), "FAULT_SLEEP": "1.0"}}
    first = subprocess.Popen(
        [*SQUALL, "run", "--model", "faultmodels:steady", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
         "--key", "id", "--features", "id_copy", "--backend", "ray", "--ray-address", cluster.address, "--workers", "1",
         "--chunk-rows", "500", "--batch-size", "500", "--ray-runtime-env", json.dumps(runtime_env), "--job-id", "reprobe",
         "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 180
    while not list((tmp_path / "out").glob("part-*")):
        assert time.monotonic() < deadline and first.poll() is None, first.stderr.read() if first.stderr else ""
        time.sleep(0.1)
    assert run_cli("cancel", "reprobe").returncode == 0
    _, stderr = first.communicate(timeout=120)
    assert first.returncode == 130, stderr
    committed = sorted(p.name for p in (tmp_path / "out").glob("part-*"))
    assert 0 < len(committed) < 8

    staging = tmp_path / "staging"
    shutil.move(str(tmp_path / "in"), staging)
    (tmp_path / "in").mkdir()  # the nodes now see an empty folder; the driver alone mounts the files over it
    script = f"mount -t tmpfs squall-private {tmp_path / 'in'} && cp {staging}/* {tmp_path / 'in'}/ && exec \"$@\""
    refused = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", *SQUALL, "resume", "reprobe", "-q"],
                             capture_output=True, text=True, timeout=240)
    assert refused.returncode == 2, refused.stderr
    assert re.search(r"Ray node [0-9a-f]{12} cannot reach the job's files: \S+/in/ids-\d\.parquet does not exist there",
                     refused.stderr), refused.stderr
    assert sorted(p.name for p in (tmp_path / "out").glob("part-*")) == committed  # nothing ran

    (tmp_path / "in").rmdir()
    shutil.move(str(staging), tmp_path / "in")
    resumed = run_cli("resume", "reprobe", "-q")
    assert resumed.returncode == 0 and "SUCCEEDED 4000 rows" in resumed.stdout, resumed.stderr
    assert_exact_output(tmp_path / "out", set(range(4_000)))
