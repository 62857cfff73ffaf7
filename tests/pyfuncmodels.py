"""An MLflow pyfunc model class; saved models refer to it by module, so workers import this file."""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc
import pandas as pd


class WeightedSum(mlflow.pyfunc.PythonModel):  # type: ignore[misc,name-defined]
    """Predicts sum(i * f_i) over the feature columns, in order."""

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> Any:
        weights = range(1, model_input.shape[1] + 1)
        return sum(w * model_input.iloc[:, i].to_numpy() for i, w in enumerate(weights))
