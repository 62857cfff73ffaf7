"""Models as users bring them: joblib estimators with each method, and their own code as `module:attr`."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from support.data import FEATURES, read_output

import squall

USER_CODE = textwrap.dedent(
    '''
    import os
    import numpy as np

    def double_sum(batch):
        assert isinstance(batch, np.ndarray), type(batch)
        return batch.sum(axis=1) * 2

    def drop_last_feature(frame):
        return frame.iloc[:, :-1]

    def as_label(output):
        return np.where(output > 0, "pos", "neg")

    def rounded_later(frame):
        values = frame.drop(columns="id").to_numpy().sum(axis=1) * 10
        return values.round().astype(int) if frame["id"].iloc[0] >= 1000 else values

    class Threaded:
        def __init__(self):
            import threading
            self.stop = threading.Event()
            threading.Thread(target=self.stop.wait, daemon=True).start()

        def predict(self, frame):
            return frame.to_numpy().sum(axis=1)

    class Scorer:
        def __init__(self):
            with open(os.environ["CONSTRUCTIONS_LOG"], "a") as log:
                log.write(f"{os.getpid()}\\n")
            self.weights = np.arange(1, 7)

        def predict(self, frame):
            return frame.to_numpy() @ self.weights

    def fails_on_multiples_of_97(frame):
        if (frame["id_copy"] % 97 == 0).any():
            raise ValueError("cannot score a multiple of 97")
        return frame["id_copy"] * 1.5
    '''
)


@pytest.fixture
def user_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "usercode.py").write_text(USER_CODE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CONSTRUCTIONS_LOG", str(tmp_path / "constructions.log"))
    return tmp_path


@pytest.mark.parametrize("method", ["predict", "predict_proba", "decision_function"])
def test_each_estimator_method_matches_the_direct_call(method, dataset, linear_model, tmp_path):
    folder, frame = dataset("parquet", rows=1_500)
    spec = squall.JobSpec(model=str(linear_model), input=[str(folder)], output=str(tmp_path / "out"), key=["id"], method=method, chunk_rows=400)
    assert squall.run(spec).state == "SUCCEEDED"
    got = read_output(tmp_path / "out").set_index("id").sort_index()
    want = np.asarray(getattr(joblib.load(linear_model), method)(frame[FEATURES]))
    np.testing.assert_allclose(got.to_numpy().reshape(want.shape), want, rtol=1e-12)


def test_a_function_receives_numpy_batches(user_code, dataset, tmp_path):
    folder, frame = dataset("csv", rows=1_000)
    spec = squall.JobSpec(model="usercode:double_sum", input=[str(folder)], output=str(tmp_path / "out"), key=["id"], batch_format="numpy", batch_size=128)
    assert squall.run(spec).state == "SUCCEEDED"
    got = read_output(tmp_path / "out").set_index("id").sort_index()
    np.testing.assert_allclose(got["prediction"], frame[FEATURES].sum(axis=1) * 2)


@pytest.mark.parametrize("fork", [True, False])
def test_a_class_is_constructed_once_per_model_load_not_per_batch(fork, user_code, dataset, tmp_path):
    folder, frame = dataset("parquet", rows=4_000)
    spec = squall.JobSpec(model="usercode:Scorer", input=[str(folder)], output=str(tmp_path / "out"), key=["id"], workers=2, chunk_rows=250, batch_size=100, fork=fork)
    result = squall.run(spec)
    assert result.state == "SUCCEEDED" and result.invocations >= 16 and result.worker_starts == 2
    constructions = (user_code / "constructions.log").read_text().split()
    assert len(constructions) == result.cold_starts == (1 if fork else 2)
    got = read_output(tmp_path / "out").set_index("id").sort_index()
    np.testing.assert_allclose(got["prediction"], frame[FEATURES].to_numpy() @ np.arange(1, 7))


def test_pre_and_postprocessing_steps_wrap_the_model(user_code, dataset, tmp_path):
    folder, frame = dataset("jsonl", rows=600)
    spec = squall.JobSpec(
        model="usercode:Scorer", input=[str(folder)], output=str(tmp_path / "out"), key=["id"],
        features=[*FEATURES, "id"], preprocess="usercode:drop_last_feature", postprocess="usercode:as_label",
        output_columns=["label"],
    )
    assert squall.run(spec).state == "SUCCEEDED"
    got = read_output(tmp_path / "out").set_index("id").sort_index()
    want = np.where(frame[FEATURES].to_numpy() @ np.arange(1, 7) > 0, "pos", "neg")
    assert got["label"].tolist() == want.tolist()


@pytest.mark.parametrize("output_format", ["csv", "jsonl"])
def test_text_output_formats_hold_the_same_predictions(output_format, dataset, linear_model, tmp_path):
    folder, frame = dataset("parquet", rows=800)
    spec = squall.JobSpec(model=str(linear_model), input=[str(folder)], output=str(tmp_path / "out"), key=["id"], output_format=output_format, method="predict_proba")
    assert squall.run(spec).state == "SUCCEEDED"
    got = read_output(tmp_path / "out", output_format).set_index("id").sort_index()
    want = joblib.load(linear_model).predict_proba(frame[FEATURES])[:, 1]
    np.testing.assert_allclose(got["prediction_True"], want, rtol=1e-9)


def test_rows_that_make_the_model_raise_are_isolated_and_the_rest_predicted(user_code, tmp_path):
    frame = pd.DataFrame({"id": np.arange(5_000), "id_copy": np.arange(5_000)})
    (tmp_path / "in").mkdir()
    frame.to_parquet(tmp_path / "in" / "ids.parquet")
    spec = squall.JobSpec(
        model="usercode:fails_on_multiples_of_97", input=[str(tmp_path / "in")], output=str(tmp_path / "out"),
        key=["id"], features=["id_copy"], batch_size=1_000, max_error_rate=0.05,
    )
    result = squall.run(spec)
    bad = set(range(0, 5_000, 97))
    assert (result.state, result.rows_in, result.rows_out, result.error_rows) == ("PARTIAL", 5_000, 5_000 - len(bad), len(bad))
    got = read_output(tmp_path / "out").set_index("id").sort_index()
    assert set(got.index) == set(range(5_000)) - bad
    np.testing.assert_allclose(got["prediction"], got.index.to_numpy() * 1.5)
    errors = pq.read_table(tmp_path / "out" / "_errors").to_pandas()
    assert sorted(json.loads(k)["id"] for k in errors["key"]) == sorted(bad)
    assert set(errors["step"]) == {"predict"} and set(errors["error_type"]) == {"ValueError"}
    assert all("multiple of 97" in m for m in errors["message"])
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert manifest["state"] == "PARTIAL" and manifest["rows"]["errors"] == len(bad) and manifest["rows"]["reconciled"]


def test_error_rows_past_max_error_rate_fail_the_job_with_the_numbers(user_code, tmp_path):
    frame = pd.DataFrame({"id": np.arange(2_000), "id_copy": np.arange(2_000)})
    (tmp_path / "in").mkdir()
    frame.to_parquet(tmp_path / "in" / "ids.parquet")
    spec = squall.JobSpec(model="usercode:fails_on_multiples_of_97", input=[str(tmp_path / "in")], output=str(tmp_path / "out"), key=["id"], features=["id_copy"])
    result = squall.run(spec)
    assert result.state == "FAILED" and result.error_rows == 21
    assert "21 of 2000 rows failed" in (result.message or "")


def test_a_model_that_starts_threads_when_loading_is_never_forked(user_code, dataset, tmp_path):
    folder, frame = dataset("parquet", rows=1_000)
    spec = squall.JobSpec(model="usercode:Threaded", input=[str(folder)], output=str(tmp_path / "out"), key=["id"], workers=2)
    result = squall.run(spec)
    assert (result.state, result.cold_starts, result.worker_starts) == ("SUCCEEDED", 3, 2)
    got = read_output(tmp_path / "out").set_index("id").sort_index()
    np.testing.assert_allclose(got["prediction"], frame[FEATURES].sum(axis=1))


def test_batches_whose_outputs_differ_in_type_share_one_part_schema(user_code, dataset, tmp_path):
    folder, frame = dataset("parquet", rows=2_000)
    spec = squall.JobSpec(model="usercode:rounded_later", input=[str(folder)], output=str(tmp_path / "out"), key=["id"], features=[*FEATURES, "id"], batch_size=50, chunk_rows=2_000)
    result = squall.run(spec)
    assert (result.state, result.rows_out) == ("SUCCEEDED", 2_000)
    got = read_output(tmp_path / "out").set_index("id").sort_index()
    assert got["prediction"].dtype == np.float64
    raw = frame[FEATURES].sum(axis=1) * 10
    assert np.allclose(got["prediction"], raw, atol=0.5)
