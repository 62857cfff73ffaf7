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

import squall
from conftest import FEATURES, make_frame, read_output, write_frame


def spec_for(model: Path, folder: Path, output: Path, **fields) -> squall.JobSpec:
    return squall.JobSpec(model=str(model), input=[str(folder)], output=str(output), key=["id"], method="predict_proba", chunk_rows=500, **fields)


def add_files(folder: Path, first: int, count: int, rows: int = 500) -> None:
    for index in range(first, first + count):
        write_frame(make_frame(rows, seed=index, start=index * rows), folder / f"data-{index:02d}.parquet", "parquet", row_group_size=250)


def predictions(output: Path) -> pd.DataFrame:
    manifest = json.loads((output / "_manifest.json").read_text())
    frames = [pd.read_parquet(output / part["path"]) for part in manifest["parts"]]
    assert sorted(p.name for p in output.glob("part-*")) == sorted(part["path"] for part in manifest["parts"])
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
    time.sleep(0.01)
    write_frame(changed, folder / "data-02.parquet", "parquet", row_group_size=250)
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
