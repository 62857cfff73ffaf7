"""`squall tune` recommends a spec that, run on the whole input, never times out, stays under its memory limit
and predicts what the model predicts.

That the tuned spec is also not slower than the defaults is a speed claim:
it is measured by `benchmarks/bench_tune.py`, not asserted here.
"""

from __future__ import annotations

import json

import numpy as np
from support.cli import run_cli
from support.data import make_frame, read_output, write_frame
from support.expect import expected_proba

import squall
from squall.spec import build_spec, load_spec_file

ROWS = 1_000_000


def test_the_tuned_spec_never_times_out_stays_under_its_memory_and_predicts_what_the_model_does(tmp_path, linear_model):
    frame = make_frame(ROWS)
    write_frame(frame, tmp_path / "data" / "rows.parquet", "parquet", row_group_size=50_000)
    (tmp_path / "job.toml").write_text(
        f'model = "{linear_model}"\ninput = ["{tmp_path / "data"}"]\noutput = "{tmp_path / "out"}"\n'
        'key = ["id"]\nmethod = "predict_proba"\ntimeout = 2.0\noverwrite = true\n'
    )
    tuned = run_cli("tune", "--spec", str(tmp_path / "job.toml"), "--json", cwd=tmp_path)
    assert tuned.returncode == 0, tuned.stderr
    found = json.loads(tuned.stdout)
    assert found["spec"] == str(tmp_path / "job.tuned.toml") and found["total_rows"] == ROWS
    assert {run["batch_size"] for run in found["runs"]} == {1024, 4096, 16384, 50_000}
    assert all(run["rows_per_s"] > 0 and run["peak_mb"] > 0 for run in found["runs"])
    values = load_spec_file(tmp_path / "job.tuned.toml")
    assert {k: values[k] for k in ("batch_size", "chunk_rows", "workers", "memory")} == {
        k: found[k] for k in ("batch_size", "chunk_rows", "workers", "memory")
    }
    assert values["timeout"] == 2.0 and values["method"] == "predict_proba"  # the rest of the spec is kept
    assert found["chunk_rows"] <= found["rows_per_s_per_worker"] * 2.0 * 0.5

    tuned_spec = build_spec(values)
    result = squall.run(tuned_spec)
    assert result.state == "SUCCEEDED" and result.rows_out == ROWS
    invocations = squall.api.report(result.job_id).to_dict()["invocations"]
    assert {i["outcome"] for i in invocations} == {"ok"}  # no timeout, no memory kill, nothing lost
    assert max(i["duration_s"] for i in invocations) <= tuned_spec.timeout
    assert max(i["max_rss_mb"] for i in invocations) < tuned_spec.memory
    got = read_output(tmp_path / "out").set_index("id").sort_index()
    want = expected_proba(linear_model, frame)
    np.testing.assert_allclose(got.to_numpy(), want.to_numpy(), rtol=1e-9, atol=1e-12)
