"""joblib and pickle files holding objects with the scikit-learn API (``predict``, ``predict_proba``, …)."""

from __future__ import annotations

import io
import pickle
from typing import Any

from squall.errors import ModelLoadError
from squall.models.base import ModelArtifact, ModelRef
from squall.models.device import require_cpu


class EstimatorModel:
    """An estimator whose ``method`` is called on each batch."""

    batch_format = "pandas"
    vector_output = False

    def __init__(self, estimator: Any, method: str, uri: str) -> None:
        bound = getattr(estimator, method, None)
        if not callable(bound):
            offered = [m for m in ("predict", "predict_proba", "decision_function", "transform") if callable(getattr(estimator, m, None))]
            raise ModelLoadError(
                f"{uri}: a {type(estimator).__name__} has no method {method!r}; use `method` = one of {offered}"
            )
        self._call = bound
        self.labels = list(estimator.classes_) if method == "predict_proba" and hasattr(estimator, "classes_") else None

    def call(self, batch: Any) -> Any:
        return self._call(batch)


class JoblibFlavor:
    """Files written by ``joblib.dump``."""

    name = "joblib"
    runs_code_on_load = True

    def load(self, ref: ModelRef, artifact: ModelArtifact) -> EstimatorModel:
        import joblib

        require_cpu(ref, "joblib models")
        return EstimatorModel(_read(artifact, joblib.load), ref.method, ref.uri)


class PickleFlavor:
    """Files written by ``pickle.dump``."""

    name = "pickle"
    runs_code_on_load = True

    def load(self, ref: ModelRef, artifact: ModelArtifact) -> EstimatorModel:
        require_cpu(ref, "pickled models")
        return EstimatorModel(_read(artifact, pickle.load), ref.method, ref.uri)


def _read(artifact: ModelArtifact, loader: Any) -> Any:
    try:
        return loader(io.BytesIO(artifact.content()))
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(
            f"{artifact.uri}: cannot load the model ({type(exc).__name__}: {exc}); "
            "check that the file is a joblib/pickle dump and that the libraries it needs are installed"
        ) from exc
