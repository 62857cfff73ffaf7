"""LightGBM boosters in their native text files, loaded by LightGBM itself.

``predict``/``predict_proba`` give the booster's prediction (probabilities
for classification objectives); ``decision_function`` the raw score.
"""

from __future__ import annotations

from typing import Any

from squall.errors import BatchShapeError, ModelLoadError
from squall.models.base import ModelArtifact, ModelRef
from squall.models.device import require_cpu
from squall.models.requirement import require


class LightGBMModel:
    """A ``Booster`` with its thread count fixed to the worker's share of the cores."""

    labels = None
    batch_format = "pandas"
    vector_output = False

    def __init__(self, booster: Any, raw: bool, threads: int) -> None:
        self._booster = booster
        self._raw = raw
        self._threads = threads

    def call(self, batch: Any) -> Any:
        return self._booster.predict(self._in_trained_order(batch), raw_score=self._raw, num_threads=self._threads)

    def _in_trained_order(self, batch: Any) -> Any:
        """The batch's columns in the order the booster was trained on: LightGBM matches them by position."""
        trained = list(self._booster.feature_name())
        columns = [str(c) for c in getattr(batch, "columns", [])]
        if not columns or columns == trained:
            return batch
        if set(columns) == set(trained):
            return batch[trained]
        raise BatchShapeError(
            f"the booster was trained on features {trained}, the batch has {columns}; set `features` to those columns"
        )


class LightGBMFlavor:
    """Files written by ``Booster.save_model`` (text)."""

    name = "lightgbm"
    runs_code_on_load = False

    def load(self, ref: ModelRef, artifact: ModelArtifact) -> LightGBMModel:
        lgb = require("lightgbm", "lightgbm")
        require_cpu(ref, "LightGBM boosters")
        try:
            booster = lgb.Booster(model_str=artifact.content().decode())
        except (lgb.basic.LightGBMError, UnicodeDecodeError) as exc:
            raise ModelLoadError(f"{ref.uri}: LightGBM cannot load this file ({exc})") from exc
        return LightGBMModel(booster, ref.method == "decision_function", ref.threads)
