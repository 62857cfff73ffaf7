"""What a loaded model offers the invocation, and how a model is named."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence


@dataclass(frozen=True)
class ModelRef:
    """Which model to load and which of its methods to call."""

    uri: str
    flavor: str
    method: str


class LoadedModel(Protocol):
    """A model ready to serve batches in one worker.

    ``call`` receives one batch (in the job's ``batch_format``) and returns one
    prediction per row: a 1-D array, a 2-D array, a DataFrame, a dict of
    arrays or an Arrow table. ``labels`` names the columns of a 2-D output
    (``classes_`` for ``predict_proba``), or is ``None``.
    """

    labels: Sequence[Any] | None

    def call(self, batch: Any) -> Any:
        """Predict one batch."""


class Flavor(Protocol):
    """Loads one kind of model; registered in :mod:`squall.models.registry`."""

    name: str

    def load(self, ref: ModelRef) -> LoadedModel:
        """Load ``ref`` or raise :class:`squall.errors.ModelLoadError` saying what to change."""
