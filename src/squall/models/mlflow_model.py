"""MLflow pyfunc models: a directory with an ``MLmodel`` file, or any URI MLflow resolves (``runs:/``, ``models:/``).

Loading a pyfunc unpickles its Python model, so it runs code: from a remote
URI it needs ``trust_model``. Batches arrive as pandas DataFrames, as
``pyfunc.predict`` expects.
"""

from __future__ import annotations

from typing import Any

from squall.errors import ModelLoadError
from squall.models.base import ModelArtifact, ModelRef
from squall.models.requirement import require


class MLflowModel:
    """A ``PyFuncModel``; ``predict`` is called on each batch."""

    labels = None
    batch_format = "pandas"
    vector_output = False

    def __init__(self, model: Any) -> None:
        self._model = model

    def call(self, batch: Any) -> Any:
        return self._model.predict(batch)


class MLflowFlavor:
    """MLflow model directories and URIs."""

    name = "mlflow"
    runs_code_on_load = True

    def load(self, ref: ModelRef, artifact: ModelArtifact) -> MLflowModel:
        pyfunc = require("mlflow.pyfunc", "mlflow")
        try:
            return MLflowModel(pyfunc.load_model(artifact.directory or ref.uri))
        except Exception as exc:
            raise ModelLoadError(f"{ref.uri}: MLflow cannot load this model ({type(exc).__name__}: {exc})") from exc
