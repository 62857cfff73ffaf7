"""Predictions from squall equal the model's own predictions, for every format, chunk size and worker count."""

from __future__ import annotations

import json
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from support.cli import run_cli
from support.data import FEATURES, read_output
from support.expect import expected_proba

import squall


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
@pytest.mark.parametrize("chunk_rows,workers", [(None, 2), (700, 1), (251, 3)])
def test_predictions_equal_the_model_for_every_format_chunking_and_worker_count(
    fmt, chunk_rows, workers, dataset, linear_model, tmp_path
):
    folder, frame = dataset(fmt, rows=2_500, files=2)
    spec = squall.JobSpec(
        model=str(linear_model), input=[str(folder)], output=str(tmp_path / "out"), key=["id"],
        method="predict_proba", workers=workers, chunk_rows=chunk_rows, batch_size=300,
    )
    result = squall.run(spec)
    assert result.state == "SUCCEEDED"
    assert (result.rows_in, result.rows_out, result.error_rows) == (5_000, 5_000, 0)
    got = read_output(tmp_path / "out").set_index("id").sort_index()
    assert not got.index.duplicated().any()
    want = expected_proba(linear_model, frame)
    assert list(got.columns) == list(want.columns)
    assert got.index.equals(want.index)
    np.testing.assert_allclose(got.to_numpy(), want.to_numpy(), rtol=1e-9, atol=1e-12)
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert manifest["rows"] == {
        "read": 5_000, "written": 5_000, "errors": 0, "dead_chunks": 0,
        "rows_in_dead_chunks_estimated": 0, "reconciled": True,
    }
    assert sum(part["rows"] for part in manifest["parts"]) == 5_000
    assert (tmp_path / "out" / "_SUCCESS").exists()
    assert not (tmp_path / "out" / "_tmp").exists()
    if chunk_rows:
        assert result.chunks >= 5_000 // chunk_rows - 2


def test_cli_run_prints_job_id_first_and_writes_committed_parts(dataset, linear_model, tmp_path):
    folder, frame = dataset("parquet", rows=4_000)
    out = tmp_path / "preds"
    done = run_cli(
        "run", "--model", str(linear_model), "--input", str(folder / "*.parquet"), "--output", str(out),
        "--key", "id", "--job-id", "nightly-1", "--workers", "2",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "job nightly-1"
    assert "SUCCEEDED" in done.stderr and "4,000 read" in done.stderr
    got = read_output(out).set_index("id").sort_index()
    model = joblib.load(linear_model)
    np.testing.assert_array_equal(got["prediction"].to_numpy(), model.predict(frame[FEATURES]))
    parts = sorted(p.name for p in out.glob("part-*.parquet"))
    assert parts and all(name.startswith("part-0") for name in parts)


def test_spec_file_runs_and_cli_options_override_it(dataset, linear_model, tmp_path):
    folder, frame = dataset("csv", rows=1_000)
    spec_file = tmp_path / "job.toml"
    spec_file.write_text(
        f'model = "{linear_model}"\ninput = ["{folder}"]\noutput = "{tmp_path / "wrong"}"\n'
        'key = "id"\nmethod = "predict_proba"\nchunk-rows = 100\nprediction_column = "p"\n'
    )
    done = run_cli("run", "--spec", str(spec_file), "--output", str(tmp_path / "right"), "--workers", "1", "-q")
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "wrong").exists()
    got = read_output(tmp_path / "right")
    assert sorted(got.columns) == ["id", "p_False", "p_True"]
    assert len(got) == 1_000


def test_plan_is_a_dry_run_listing_chunks_with_rows_and_bytes(dataset, linear_model, tmp_path):
    folder, _ = dataset("parquet", rows=2_000, files=3, row_group_size=250)
    done = run_cli(
        "plan", "--model", str(linear_model), "--input", str(folder), "--output", str(tmp_path / "out"),
        "--key", "id", "--chunk-rows", "500", "--json",
    )
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert plan["format"] == "parquet" and plan["files"] == 3
    assert len(plan["chunks"]) == 12
    assert all(chunk["est_rows"] == 500 and chunk["est_bytes"] > 0 for chunk in plan["chunks"])
    assert plan["features"] == FEATURES
    assert not (tmp_path / "out").exists()
    table = run_cli("plan", "--model", str(linear_model), "--input", str(folder), "--output", str(tmp_path / "o"))
    assert table.returncode == 0 and "chunks" in table.stdout


def test_status_lists_recent_jobs_and_details_one(dataset, linear_model, tmp_path):
    folder, _ = dataset("parquet", rows=1_000)
    for name in ("first", "second"):
        spec = squall.JobSpec(model=str(linear_model), input=[str(folder)], output=str(tmp_path / name), key=["id"], job_id=name)
        assert squall.run(spec).state == "SUCCEEDED"
    listing = run_cli("status")
    assert listing.returncode == 0
    assert listing.stdout.index("second") < listing.stdout.index("first")
    detail = json.loads(run_cli("status", "first", "--json").stdout)
    assert detail["state"] == "SUCCEEDED" and detail["rows_out"] == 1_000 and detail["chunks"]["done"] >= 1
    assert detail["cold_starts"] >= 1
    missing = run_cli("status", "nope")
    assert missing.returncode == 2 and "no job 'nope'" in missing.stderr


def test_rows_without_a_key_carry_source_and_offset(dataset, linear_model, tmp_path):
    folder, frame = dataset("jsonl", rows=500)
    spec = squall.JobSpec(model=str(linear_model), input=[str(folder)], output=str(tmp_path / "out"), features=FEATURES, chunk_rows=60, workers=2)
    assert squall.run(spec).state == "SUCCEEDED"
    got = read_output(tmp_path / "out")
    assert list(got.columns) == ["_source", "_offset", "prediction"]
    source = got["_source"].iloc[0]
    raw = Path(source).read_bytes()
    for offset, prediction in zip(got["_offset"][:50], got["prediction"][:50]):
        line = raw[offset:].split(b"\n", 1)[0]
        row = pd.DataFrame([json.loads(line)])
        assert joblib.load(linear_model).predict(row[FEATURES])[0] == prediction


def test_output_holding_other_results_is_refused_unless_overwrite(dataset, linear_model, tmp_path):
    folder, _ = dataset("parquet", rows=500)
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    args = ["run", "--model", str(linear_model), "--input", str(folder), "--output", str(out), "--key", "id", "-q"]
    refused = run_cli(*args)
    assert refused.returncode == 2
    assert "already holds files squall did not write" in refused.stderr and "--overwrite" in refused.stderr
    assert (out / "precious.txt").read_text() == "keep me"
    replaced = run_cli(*args, "--overwrite")
    assert replaced.returncode == 0, replaced.stderr
    assert not (out / "precious.txt").exists() and len(read_output(out)) == 500
    again = run_cli(*args)
    assert again.returncode == 2 and "results of job" in again.stderr
