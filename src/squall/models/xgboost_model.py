"""XGBoost boosters in their native files (``.ubj``, or ``.json`` holding a ``learner``), loaded by XGBoost itself.

``predict`` and ``predict_proba`` give the booster's prediction (for a
logistic objective, the probability of the positive class; for softprob, one
column per class); ``decision_function`` gives the raw margin.
"""

from __future__ import annotations

from typing import Any

from squall.errors import ModelLoadError
from squall.models.base import ModelArtifact, ModelRef
from squall.models.device import on_gpu
from squall.models.requirement import require


class XGBoostModel:
    """A ``Booster`` predicting in place (no DMatrix copy)."""

    labels = None
    batch_format = "pandas"
    vector_output = False

    def __init__(self, booster: Any, margin: bool) -> None:
        self._booster = booster
        self._predict_type = "margin" if margin else "value"

    def call(self, batch: Any) -> Any:
        return self._booster.inplace_predict(batch, predict_type=self._predict_type)


class XGBoostFlavor:
    """Files written by ``Booster.save_model`` / ``XGBModel.save_model``."""

    name = "xgboost"
    runs_code_on_load = False

    def load(self, ref: ModelRef, artifact: ModelArtifact) -> XGBoostModel:
        xgb = require("xgboost", "xgboost")
        booster = xgb.Booster()
        try:
            booster.load_model(bytearray(artifact.content()))
        except xgb.core.XGBoostError as exc:
            raise ModelLoadError(f"{ref.uri}: XGBoost cannot load this file ({str(exc).splitlines()[0]})") from exc
        if on_gpu(ref) and not xgb.build_info().get("USE_CUDA"):
            raise ModelLoadError("--gpus asks for a GPU but this XGBoost was built without CUDA; install a CUDA build, or drop --gpus")
        booster.set_param({"nthread": ref.threads, "device": ref.device if on_gpu(ref) else "cpu"})
        return XGBoostModel(booster, ref.method == "decision_function")
