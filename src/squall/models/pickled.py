"""joblib and pickle files holding objects with the scikit-learn API (``predict``, ``predict_proba``, …)."""

from __future__ import annotations

import pickle
from typing import Any

import fsspec

from squall.errors import ModelLoadError
from squall.models.base import ModelRef


class EstimatorModel:
    """An estimator whose ``method`` is called on each batch."""

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

    def load(self, ref: ModelRef) -> EstimatorModel:
        import joblib

        return EstimatorModel(_read(ref.uri, joblib.load), ref.method, ref.uri)


class PickleFlavor:
    """Files written by ``pickle.dump``."""

    name = "pickle"

    def load(self, ref: ModelRef) -> EstimatorModel:
        return EstimatorModel(_read(ref.uri, pickle.load), ref.method, ref.uri)


def _read(uri: str, loader: Any) -> Any:
    try:
        with fsspec.open(uri, "rb") as handle:
            return loader(handle)
    except FileNotFoundError:
        raise ModelLoadError(f"{uri}: no such model file") from None
    except Exception as exc:
        raise ModelLoadError(
            f"{uri}: cannot load the model ({type(exc).__name__}: {exc}); "
            "check that the file is a joblib/pickle dump and that the libraries it needs are installed"
        ) from exc
