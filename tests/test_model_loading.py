"""Loading models safely (pins, trust, refusals), the warm cache, GPU placement, and `batch_size = "auto"`."""

from __future__ import annotations

import hashlib
import json
import shutil
import textwrap
from pathlib import Path
from typing import Iterator

import fsspec
import joblib
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support.cli import run_cli
from support.data import FEATURES, read_output
from support.s3server import S3Server, serve_with_credentials

import squall
from squall.backends.local.backend import gpu_for
from squall.errors import BatchShapeError, ModelLoadError
from squall.io.storage import is_remote
from squall.models.artifact import tree_sha256
from squall.models.base import ModelRef
from squall.models.registry import detect_flavor, load_warm, resolved
from squall.runtime.batching import AUTO_SIZES, BatchSizer


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_pinned_model_runs_and_a_changed_one_is_refused_naming_both_hashes(dataset, linear_model, tmp_path):
    folder, _ = dataset("parquet", rows=500)
    model = tmp_path / "model.joblib"
    shutil.copy(linear_model, model)
    pin = _sha256(model)
    ok = run_cli("run", "--model", str(model), "--input", str(folder), "--output", str(tmp_path / "ok"), "--key", "id", "--model-sha256", pin)
    assert ok.returncode == 0, ok.stderr

    model.write_bytes(model.read_bytes() + b"\0")  # same size class, different content
    changed = run_cli("run", "--model", str(model), "--input", str(folder), "--output", str(tmp_path / "bad"), "--key", "id", "--model-sha256", pin)
    assert changed.returncode == 2
    assert f"its sha256 is {_sha256(model)}, but --model-sha256 pins {pin}" in changed.stderr.replace("\n", "")
    assert not list((tmp_path / "bad").glob("part-*"))


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    yield from serve_with_credentials()


def test_an_onnx_model_on_s3_runs_untrusted_and_a_remote_pickle_is_refused_before_anything_is_read(
    s3, dataset, linear_model, tmp_path
):
    from onnxruntime import InferenceSession
    from skl2onnx import to_onnx

    folder, frame = dataset("parquet", rows=600)
    features = frame[FEATURES].to_numpy(dtype=np.float32)
    onnx_model = to_onnx(joblib.load(linear_model), features[:1], options={"zipmap": False}).SerializeToString()
    store = fsspec.filesystem("s3", endpoint_url=s3.endpoint, skip_instance_cache=True)
    store.mkdir("models-bucket")
    store.pipe_file("models-bucket/model.onnx", onnx_model)
    store.put_file(str(linear_model), "models-bucket/model.joblib")
    common = ["--input", str(folder), "--key", "id", "--method", "predict_proba", "--endpoint-url", s3.endpoint, "-q"]

    served = len(s3.log.requests)
    refused = run_cli("run", "--model", "s3://models-bucket/model.joblib", "--output", str(tmp_path / "out"), *common)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
    assert "runs code stored in it" in refused.stderr and "--trust-model" in refused.stderr
    assert not [r for r in s3.log.requests[served:] if "model.joblib" in r[1]], "the pickle was read before the refusal"
    assert not (tmp_path / "out").exists()

    onnx = run_cli("run", "--model", "s3://models-bucket/model.onnx", "--output", str(tmp_path / "onnx"), *common)
    assert onnx.returncode == 0, onnx.stderr
    assert onnx.stdout.strip().splitlines()[-1].startswith("SUCCEEDED 600 rows")
    assert [r for r in s3.log.requests[served:] if r[0] == "GET" and r[1].startswith("/models-bucket/model.onnx")]
    session = InferenceSession(onnx_model, providers=["CPUExecutionProvider"])
    (probabilities,) = session.run(["probabilities"], {"X": features})
    got = read_output(tmp_path / "onnx").set_index("id").sort_index()
    assert got.index.tolist() == frame["id"].tolist()
    np.testing.assert_allclose(got.to_numpy(), probabilities, atol=1e-6)  # float32 exp differs by an ulp across batch sizes


def test_a_missing_flavor_library_or_unknown_model_says_what_to_do(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"\0" * 10)
    with pytest.raises(ModelLoadError, match=r"cannot tell how to load this model; set `flavor` to one of .*onnx"):
        detect_flavor(str(tmp_path / "weights.bin"))
    (tmp_path / "notes.txt").write_text("not a booster")
    with pytest.raises(ModelLoadError, match="cannot tell how to load"):
        detect_flavor(str(tmp_path / "notes.txt"))


def test_the_warm_cache_is_keyed_by_content_not_by_path(linear_model, tmp_path):
    copy = tmp_path / "copy.joblib"
    shutil.copy(linear_model, copy)
    first = load_warm(ModelRef(str(linear_model), "auto", "predict"))
    assert load_warm(ModelRef(str(copy), "auto", "predict")) is first
    copy.write_bytes(copy.read_bytes() + b"\0")
    assert load_warm(ModelRef(str(copy), "auto", "predict")) is not first


def test_a_directory_pin_covers_every_file_in_it(tmp_path):
    (tmp_path / "m" / "sub").mkdir(parents=True)
    (tmp_path / "m" / "a.json").write_text("{}")
    (tmp_path / "m" / "sub" / "w.bin").write_bytes(b"123")
    before = tree_sha256(str(tmp_path / "m"))
    (tmp_path / "m" / "sub" / "w.bin").write_bytes(b"124")
    assert tree_sha256(str(tmp_path / "m")) != before
    (tmp_path / "m" / "sub" / "w.bin").write_bytes(b"123")
    assert tree_sha256(str(tmp_path / "m")) == before


def test_each_worker_sees_its_own_gpu_counted_within_the_visible_ones():
    assert [gpu_for(w, 2, None) for w in range(5)] == ["0", "1", "0", "1", "0"]
    assert [gpu_for(w, 2, "4,6,7") for w in range(3)] == ["4", "6", "4"]
    assert [gpu_for(w, 4, "3") for w in range(2)] == ["3", "3"]


def _has_cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


@pytest.mark.skipif(_has_cuda(), reason="this machine has a GPU: the GPU run below is the test")
def test_asking_for_a_gpu_without_one_fails_at_start_up_and_says_so(dataset, tmp_path):
    import torch
    from torchnets import TinyNet

    torch.save(TinyNet().state_dict(), tmp_path / "w.pt")
    folder, _ = dataset("parquet", rows=100)
    spec = squall.JobSpec(model="torchnets:TinyNet", state_dict=str(tmp_path / "w.pt"), input=[str(folder)], output=str(tmp_path / "out"), gpus=1)
    with pytest.raises(ModelLoadError, match="--gpus asks for cuda:0 but torch sees no CUDA device"):
        squall.run(spec)


@pytest.mark.skipif(not _has_cuda(), reason="needs a CUDA device; none on this machine (the CPU path is tested in test_flavors.py)")
def test_a_torch_model_on_the_gpu_predicts_like_the_cpu(dataset, tmp_path):
    import torch
    from torchnets import TinyNet

    torch.manual_seed(0)
    module = TinyNet().eval()
    torch.save(module.state_dict(), tmp_path / "w.pt")
    folder, frame = dataset("parquet", rows=2_000)
    spec = squall.JobSpec(model="torchnets:TinyNet", state_dict=str(tmp_path / "w.pt"), input=[str(folder)], output=str(tmp_path / "out"), key=["id"], gpus=1, workers=2)
    assert squall.run(spec).state == "SUCCEEDED"
    got = read_output(tmp_path / "out").set_index("id").sort_index().to_numpy()
    with torch.inference_mode():
        want = module(torch.from_numpy(frame[FEATURES].to_numpy(np.float32))).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def _feed(sizer: BatchSizer, seconds_for: object, rss_for: object = lambda rows: 100.0, calls: int = 200) -> None:
    for _ in range(calls):
        rows = sizer.current
        sizer.observe(rows, seconds_for(rows), rss_for(rows))  # type: ignore[operator]


def test_auto_batch_size_grows_while_throughput_rises_and_stops_at_the_cap():
    sizer = BatchSizer(None)
    _feed(sizer, lambda rows: 0.05 + rows * 1e-6)  # a fixed cost per call: bigger is always faster
    assert sizer.settled and sizer.current == AUTO_SIZES[-1]


def test_auto_batch_size_settles_before_the_size_where_throughput_falls():
    sizer = BatchSizer(None)
    _feed(sizer, lambda rows: 0.05 + rows * (1e-5 if rows <= 4096 else 1e-4))  # past 4,096 rows the cache thrashes
    assert sizer.settled and sizer.current == 4096


def test_auto_batch_size_stays_within_the_memory_limit():
    sizer = BatchSizer(None, memory_mb=1_000)
    _feed(sizer, lambda rows: 0.05 + rows * 1e-6, rss_for=lambda rows: 200 + rows * 0.05)  # 50 MB per 1,000 rows
    # 8,192 rows hold 610 MB; doubling to 16,384 would reach about 1,020 MB, past 80 % of the limit
    assert sizer.settled and sizer.current == 8192
    assert 200 + sizer.current * 0.05 <= 0.8 * 1_000 < 200 + 2 * sizer.current * 0.05


def test_a_fixed_batch_size_is_honoured_and_never_measured():
    sizer = BatchSizer(1000)
    _feed(sizer, lambda rows: 1.0)
    assert sizer.current == sizer.read_rows == 1000


def test_auto_batch_size_job_predicts_the_same_rows_and_reports_its_size(dataset, linear_model, tmp_path):
    folder, frame = dataset("parquet", rows=60_000, row_group_size=20_000)
    result = squall.run(squall.JobSpec(model=str(linear_model), input=[str(folder)], output=str(tmp_path / "auto"), key=["id"], batch_size="auto", workers=2))
    assert result.state == "SUCCEEDED" and result.rows_out == 60_000
    assert result.batch_sizes and all(size in AUTO_SIZES for size in result.batch_sizes)
    got = read_output(tmp_path / "auto").set_index("id").sort_index()["prediction"].to_numpy()
    import joblib

    np.testing.assert_array_equal(got, joblib.load(linear_model).predict(frame[FEATURES]))
    summary = run_cli("run", "--model", str(linear_model), "--input", str(folder), "--output", str(tmp_path / "cli"), "--key", "id", "--batch-size", "auto")
    assert summary.returncode == 0 and "rows per model call" in summary.stdout + summary.stderr


VECTOR_CODE = textwrap.dedent(
    """
    import numpy as np

    def outer(frame):
        values = frame.to_numpy()
        return np.stack([values[:, 0], values[:, 1] * 2], axis=1)
    """
)


@pytest.mark.parametrize("layout", ["columns", "vector"])
def test_a_two_dimensional_prediction_is_written_as_columns_or_as_one_vector_column(layout, dataset, tmp_path, monkeypatch):
    (tmp_path / "vectorcode.py").write_text(VECTOR_CODE)
    monkeypatch.chdir(tmp_path)
    folder, frame = dataset("parquet", rows=300)
    spec = squall.JobSpec(model="vectorcode:outer", input=[str(folder)], output=str(tmp_path / "out"), key=["id"], output_layout=layout)
    assert squall.run(spec).state == "SUCCEEDED"
    table = pq.read_table(sorted((tmp_path / "out").glob("part-*.parquet"))).sort_by("id")
    want = np.stack([frame["f0"], frame["f1"] * 2], axis=1)
    if layout == "columns":
        assert table.column_names == ["id", "prediction_0", "prediction_1"]
        got = np.stack([table.column("prediction_0").to_numpy(), table.column("prediction_1").to_numpy()], axis=1)
    else:
        assert table.schema.field("prediction").type == pa.list_(pa.float64(), 2)
        got = np.stack(table.column("prediction").to_numpy(zero_copy_only=False))
    np.testing.assert_array_equal(got, want)


def test_a_vector_column_in_a_csv_output_is_written_as_json_arrays(dataset, tmp_path, monkeypatch):
    (tmp_path / "vectorcode.py").write_text(VECTOR_CODE)
    monkeypatch.chdir(tmp_path)
    folder, frame = dataset("parquet", rows=200)
    spec = squall.JobSpec(model="vectorcode:outer", input=[str(folder)], output=str(tmp_path / "out"), key=["id"],
                          output_layout="vector", output_format="csv")
    assert squall.run(spec).state == "SUCCEEDED"
    got = read_output(tmp_path / "out", "csv").set_index("id").sort_index()
    vectors = np.array([json.loads(text) for text in got["prediction"]])
    np.testing.assert_array_equal(vectors, np.stack([frame["f0"], frame["f1"] * 2], axis=1))


def test_a_model_named_by_a_file_url_loads_like_its_path(dataset, linear_model, tmp_path):
    folder, frame = dataset("parquet", rows=300)
    spec = squall.JobSpec(model=linear_model.as_uri(), input=[str(folder)], output=str(tmp_path / "out"), key=["id"])
    assert squall.run(spec).state == "SUCCEEDED"
    import joblib

    got = read_output(tmp_path / "out").set_index("id").sort_index()["prediction"].to_numpy()
    np.testing.assert_array_equal(got, joblib.load(linear_model).predict(frame[FEATURES]))


def test_a_model_taking_integers_refuses_nulls_and_fractions_rather_than_inventing_numbers():
    from squall.models.matrix import as_matrix

    for batch in (pa.record_batch({"a": [1, None, 3]}), pa.record_batch({"a": [1.7, 2.0, 3.0]})):
        with pytest.raises(BatchShapeError):
            as_matrix(batch, np.int64)
    np.testing.assert_array_equal(as_matrix(pa.record_batch({"a": [1.0, 2.0]}), np.int64), [[1], [2]])


def test_a_text_model_gets_the_texts_themselves_in_every_batch_format():
    from squall.models.matrix import column_texts
    from squall.runtime.predictions import to_model_input

    batch = pa.record_batch({"text": ["hello world", None]})
    for batch_format in ("arrow", "pandas", "numpy"):
        text, missing = column_texts(to_model_input(batch, ["text"], batch_format))
        assert text == "hello world" and not isinstance(missing, str)  # None or NaN: the model refuses the row


def test_state_dict_is_refused_for_any_model_but_a_torch_module_class(tmp_path):
    (tmp_path / "innocent.bin").write_bytes(b"0")
    ref = ModelRef("https://example.invalid/mlflow-model", "mlflow", "predict", state_dict=str(tmp_path / "innocent.bin"))
    with pytest.raises(ModelLoadError, match="`state_dict` gives the weights of a `package.module:Class` PyTorch model"):
        resolved(ref)


def test_remote_is_judged_on_every_link_of_an_fsspec_chain_and_mlflow_uris():
    assert is_remote("simplecache::https://example.invalid/model.pkl")
    assert is_remote("filecache::s3://bucket/model.pkl")
    assert is_remote("runs:/0123/model") and detect_flavor("runs:/0123/model") == "mlflow"
    assert not is_remote("/models/model.pkl") and not is_remote("file:///models/model.pkl")
    with pytest.raises(ModelLoadError, match="--trust-model"):
        resolved(ModelRef("simplecache::https://example.invalid/model.pkl", "auto", "predict"))


def test_a_directory_pin_follows_linked_folders(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "w.bin").write_bytes(b"1")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "weights").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "model" / "loop").symlink_to(tmp_path / "model")
    before = tree_sha256(str(tmp_path / "model"))
    (tmp_path / "elsewhere" / "w.bin").write_bytes(b"2")
    assert tree_sha256(str(tmp_path / "model")) != before


def test_a_bfloat16_module_predicts_from_float32_rows():
    import torch

    from squall.models.torch_model import TorchModel

    torch.manual_seed(0)
    module = torch.nn.Linear(3, 2).to(torch.bfloat16).eval()
    batch = pa.record_batch({"a": [1.0, 2.0], "b": [0.5, 0.0], "c": [-1.0, 4.0]})
    got = TorchModel(module, "cpu", "predict").call(batch)
    with torch.inference_mode():
        want = module(torch.tensor([[1.0, 0.5, -1.0], [2.0, 0.0, 4.0]], dtype=torch.bfloat16)).float().numpy()
    np.testing.assert_array_equal(got, want)
