"""`squall tune` recommends a spec that, run on the whole input, never times out and is not slower than the defaults.

Wall times on this 2-core machine, shared with other work, move by up to
30 % between identical runs (see the benchmarks in README.md). So each spec
runs twice, interleaved (default, tuned, default, tuned) so that a slow
spell hits both, and the faster run of each counts; the tuned spec must then
be within 1.25× of the default. A tuning that made things worse by more than
noise fails; one that is merely as good passes, which is the promise.
"""

from __future__ import annotations

import json
from pathlib import Path

import squall
from conftest import make_frame, run_cli, write_frame
from squall.spec import build_spec, load_spec_file

ROWS = 1_000_000


def _wall(spec: squall.JobSpec) -> tuple[float, list[dict]]:
    result = squall.run(spec)
    assert result.state == "SUCCEEDED" and result.rows_out == ROWS
    report = squall.api.report(result.job_id).to_dict()
    return result.wall_s, report["invocations"]


def test_the_tuned_spec_never_times_out_and_is_not_slower_than_the_defaults(tmp_path, linear_model):
    write_frame(make_frame(ROWS), tmp_path / "data" / "rows.parquet", "parquet", row_group_size=50_000)
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

    default_spec = build_spec(load_spec_file(tmp_path / "job.toml"))
    tuned_spec = build_spec(values)
    walls: dict[str, list[float]] = {"default": [], "tuned": []}
    for _ in range(2):
        for name, spec in (("default", default_spec), ("tuned", tuned_spec)):
            wall, invocations = _wall(spec)
            walls[name].append(wall)
            if name == "tuned":
                assert {i["outcome"] for i in invocations} == {"ok"}  # no timeout, no memory kill, nothing lost
                assert max(i["duration_s"] for i in invocations) <= tuned_spec.timeout
                assert max(i["max_rss_mb"] for i in invocations) < tuned_spec.memory
    print(f"wall times: {walls}")
    assert min(walls["tuned"]) <= 1.25 * min(walls["default"]), walls
