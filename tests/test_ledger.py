"""The chunk ledger: incremental runs over growing inputs redo only what changed, and say so in the manifest."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from support.data import FEATURES, make_frame, write_frame

import squall


def spec_for(model: Path, folder: Path, output: Path, **fields) -> squall.JobSpec:
    return squall.JobSpec(model=str(model), input=[str(folder)], output=str(output), key=["id"], method="predict_proba", chunk_rows=500, **fields)


def add_files(folder: Path, first: int, count: int, rows: int = 500) -> None:
    for index in range(first, first + count):
        write_frame(make_frame(rows, seed=index, start=index * rows), folder / f"data-{index:02d}.parquet", "parquet", row_group_size=250)


def predictions(output: Path) -> pd.DataFrame:
    """The output as the manifest lists it; each file on disk is listed, and each chunk's rows are its slice
    (a merged file holds many chunks, each at its ``first_row``)."""
    manifest = json.loads((output / "_manifest.json").read_text())
    tables = {path: pq.read_table(output / path) for path in {part["path"] for part in manifest["parts"]}}
    assert sorted(p.name for p in output.glob("part-*")) == sorted(tables)
    frames = [tables[part["path"]].slice(part.get("first_row", 0), part["rows"]).to_pandas() for part in manifest["parts"]]
    assert sum(len(frame) for frame in frames) == sum(table.num_rows for table in tables.values())
    return pd.concat(frames).set_index("id").sort_index()


def test_appending_files_runs_only_the_new_files_and_matches_a_fresh_run(linear_model, tmp_path):
    folder, out = tmp_path / "in", tmp_path / "out"
    add_files(folder, 0, 10)
    first = squall.run(spec_for(linear_model, folder, out, incremental=True))
    assert first.state == "SUCCEEDED" and first.invocations == 10
    add_files(folder, 10, 3)
    second = squall.run(spec_for(linear_model, folder, out, incremental=True))
    assert (second.state, second.invocations, second.rows_out) == ("SUCCEEDED", 3, 1_500)
    fresh = squall.run(spec_for(linear_model, folder, tmp_path / "fresh"))
    assert fresh.invocations == 13
    pd.testing.assert_frame_equal(predictions(out), predictions(tmp_path / "fresh"))
    frame = pd.concat([make_frame(500, seed=i, start=i * 500) for i in range(13)])
    model = __import__("joblib").load(linear_model)
    assert list(predictions(out).index) == frame["id"].tolist()
    np.testing.assert_allclose(predictions(out)["prediction_True"].to_numpy(), model.predict_proba(frame[FEATURES])[:, 1], rtol=1e-12)
    manifest = json.loads((out / "_manifest.json").read_text())
    assert sorted({part["run"] for part in manifest["parts"]}) == [1, 2]
    assert sum(part["run"] == 2 for part in manifest["parts"]) == 3
    assert [run["run"] for run in manifest["ledger"]["runs"]] == [1, 2]
    assert set(manifest["ledger"]["runs"][1]["planned"].values()) == {"new file"}
    assert (out / "_SUCCESS").exists()


def test_a_modified_file_is_rerun_alone_and_its_old_rows_are_gone(linear_model, tmp_path):
    folder, out = tmp_path / "in", tmp_path / "out"
    add_files(folder, 0, 5)
    squall.run(spec_for(linear_model, folder, out, incremental=True))
    changed = make_frame(400, seed=77, start=10_000)
    rewritten = folder / "data-02.parquet"
    before = rewritten.stat().st_mtime_ns
    write_frame(changed, rewritten, "parquet", row_group_size=250)
    deadline = time.monotonic() + 10
    while rewritten.stat().st_mtime_ns == before:  # a coarse file clock can give the rewrite the old time
        assert time.monotonic() < deadline, "the file's modification time never moved"
        write_frame(changed, rewritten, "parquet", row_group_size=250)
    again = squall.run(spec_for(linear_model, folder, out, incremental=True))
    assert (again.state, again.invocations, again.rows_out) == ("SUCCEEDED", 1, 400)
    got = predictions(out)
    assert not got.index.duplicated().any()
    expected_ids = set(range(0, 1_000)) | set(range(1_500, 2_500)) | set(range(10_000, 10_400))
    assert set(got.index) == expected_ids
    model = __import__("joblib").load(linear_model)
    np.testing.assert_allclose(got.loc[changed["id"], "prediction_True"], model.predict_proba(changed[FEATURES])[:, 1])


def test_row_groups_appended_to_a_parquet_file_are_the_only_rows_planned(linear_model, tmp_path):
    folder, out = tmp_path / "in", tmp_path / "out"
    path = folder / "growing.parquet"
    frame = make_frame(1_000)
    write_frame(frame, path, "parquet", row_group_size=250)
    squall.run(spec_for(linear_model, folder, out, incremental=True))
    more = make_frame(500, seed=5, start=1_000)
    with pq.ParquetWriter(path, pa.Table.from_pandas(frame, preserve_index=False).schema) as writer:
        for start in range(0, 1_000, 250):
            writer.write_table(pa.Table.from_pandas(frame.iloc[start : start + 250], preserve_index=False))
        for start in range(0, 500, 250):
            writer.write_table(pa.Table.from_pandas(more.iloc[start : start + 250], preserve_index=False))
    grown = squall.run(spec_for(linear_model, folder, out, incremental=True))
    assert (grown.state, grown.rows_in) == ("SUCCEEDED", 500)
    assert sorted(predictions(out).index) == list(range(1_500))
    manifest = json.loads((out / "_manifest.json").read_text())
    assert list(manifest["ledger"]["runs"][-1]["planned"].values()) == ["2 row groups appended"]


def test_a_new_model_reruns_everything_unless_stale_parts_are_kept(linear_model, tmp_path):
    folder, out = tmp_path / "in", tmp_path / "out"
    add_files(folder, 0, 4)
    squall.run(spec_for(linear_model, folder, out, incremental=True))
    retrained = tmp_path / "retrained.joblib"
    retrained.write_bytes(linear_model.read_bytes() + b"")
    model = __import__("joblib").load(linear_model)
    model.coef_ = model.coef_ * 2
    __import__("joblib").dump(model, retrained)
    kept = squall.run(spec_for(retrained, folder, out, incremental=True, keep_stale=True))
    assert kept.invocations == 0 and kept.state == "SUCCEEDED"
    rerun = squall.run(spec_for(retrained, folder, out, incremental=True))
    assert rerun.invocations == 4 and rerun.rows_out == 2_000
    got = predictions(out)
    frame = pd.concat([make_frame(500, seed=i, start=i * 500) for i in range(4)])
    np.testing.assert_allclose(got["prediction_True"].to_numpy(), model.predict_proba(frame[FEATURES])[:, 1])
    assert {p.name.split("-")[1] for p in out.glob("part-*")} == {"r003"}


def ids_job(tmp_path: Path, **fields) -> squall.JobSpec:
    return squall.JobSpec(
        model="faultmodels:broken_on_one_percent", input=[str(tmp_path / "in")], output=str(tmp_path / "out"),
        key=["id"], features=["id_copy"], max_error_rate=0.02, **fields,
    )


def error_table(output: Path) -> pd.DataFrame:
    folder = output / "_errors"
    files = sorted(folder.glob("*.parquet")) if folder.exists() else []
    return pd.concat([pd.read_parquet(f) for f in files]) if files else pd.DataFrame()


def test_replay_with_the_fixed_model_recovers_every_failed_row(tmp_path, monkeypatch):
    from support.data import ids_dataset

    ids_dataset(tmp_path / "in", 10_000, files=2, row_group_size=1_000)
    flag = tmp_path / "bug"
    flag.write_text("on")
    monkeypatch.setenv("FAULT_FLAG", str(flag))
    first = squall.run(ids_job(tmp_path, chunk_rows=2_000, batch_size=500))
    assert (first.state, first.error_rows, first.rows_out) == ("PARTIAL", 100, 9_900)
    again = squall.replay(first.job_id)
    assert again.error_rows == 100
    assert set(error_table(tmp_path / "out")["tries"]) == {2}
    flag.unlink()
    fixed = squall.replay(first.job_id)
    assert (fixed.state, fixed.rows_in, fixed.rows_out, fixed.error_rows) == ("SUCCEEDED", 10_000, 10_000, 0)
    got = predictions(tmp_path / "out")
    assert list(got.index) == list(range(10_000))
    np.testing.assert_array_equal(got["prediction"].to_numpy(), np.arange(10_000) * 2.0)
    assert error_table(tmp_path / "out").empty
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert manifest["errors"] == [] and manifest["rows"]["reconciled"] and manifest["state"] == "SUCCEEDED"


def test_a_coordinator_killed_during_replay_resumes_without_losing_or_duplicating_rows(tmp_path, monkeypatch):
    import signal
    import sqlite3
    import subprocess

    from support.cli import SQUALL, run_cli
    from support.data import ids_dataset

    ids_dataset(tmp_path / "in", 20_000, row_group_size=1_000)
    flag = tmp_path / "bug"
    flag.write_text("on")
    monkeypatch.setenv("FAULT_FLAG", str(flag))
    first = squall.run(ids_job(tmp_path, chunk_rows=40, batch_size=1_000, job_id="replayed"))
    assert first.error_rows == 200
    flag.unlink()
    env = {**os.environ, "FAULT_SLEEP": "0.3"}
    process = subprocess.Popen([*SQUALL, "replay", "replayed", "-q"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    database = Path(os.environ["SQUALL_HOME"]) / "squall.db"

    def replay_chunks() -> dict[str, int]:
        with sqlite3.connect(database) as db:
            return dict(db.execute("SELECT state, COUNT(*) FROM chunks WHERE kind='replay' GROUP BY state").fetchall())

    deadline = time.monotonic() + 120
    while not (replay_chunks().get("done", 0) >= 1 and replay_chunks().get("leased", 0) >= 1):
        assert time.monotonic() < deadline and process.poll() is None, f"no replay in flight: {replay_chunks()}"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    at_kill = replay_chunks()  # a killed coordinator leaves its leases as they were
    assert at_kill.get("leased", 0) >= 1 and at_kill.get("done", 0) >= 1, at_kill
    resumed = run_cli("resume", "replayed", "-q", env={"FAULT_SLEEP": "0"})
    assert resumed.returncode == 0, resumed.stderr
    assert "SUCCEEDED 20000 rows" in resumed.stdout
    with sqlite3.connect(database) as db:
        redone = db.execute("SELECT COUNT(*) FROM attempts WHERE outcome='lost' AND error='the coordinator stopped'").fetchone()[0]
    assert redone == at_kill["leased"]  # the replay chunks in flight at the kill ran again
    got = predictions(tmp_path / "out")
    assert list(got.index) == list(range(20_000))
    assert (got["prediction"].to_numpy() == got.index.to_numpy() * 2.0).all()  # the fixed model's own output
    assert error_table(tmp_path / "out").empty


def test_diff_counts_changed_appeared_and_disappeared_predictions(linear_model, tmp_path):
    from support.cli import run_cli

    folder = tmp_path / "in"
    add_files(folder, 0, 2)
    squall.run(spec_for(linear_model, folder, tmp_path / "old"))
    (folder / "data-00.parquet").unlink()
    add_files(folder, 2, 1)
    model = __import__("joblib").load(linear_model)
    model.intercept_ = model.intercept_ + 1.0
    __import__("joblib").dump(model, tmp_path / "new.joblib")
    squall.run(spec_for(tmp_path / "new.joblib", folder, tmp_path / "new"))
    done = run_cli("diff", str(tmp_path / "old"), str(tmp_path / "new"), "--key", "id", "--json")
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert (found["rows_old"], found["rows_new"], found["changed"], found["appeared"], found["disappeared"]) == (1_000, 1_000, 500, 500, 500)
    assert found["unchanged"] == 0 and found["max_change"]["prediction_True"] > 0
