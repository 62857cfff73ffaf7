"""What a loaded model offers the invocation, how a model is named, and what a flavor must do to load one."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence


@dataclass(frozen=True)
class ModelRef:
    """Which model to load, how, and where it runs.

    ``uri`` is a file, a directory or ``module:attr``; ``state_dict`` names the
    weights of a ``module:Class`` PyTorch model; ``output`` picks one named
    output of a multi-output model. ``sha256`` pins the content; ``trust``
    allows a flavor that runs code on load to read from a remote URI.
    ``device`` is ``cpu`` or ``cuda:N`` as this worker sees it; ``threads``
    caps the model runtime's intra-op threads. ``storage_options`` reach the
    store the model lives on (the job's ``storage_options`` and ``endpoint_url``).
    """

    uri: str
    flavor: str
    method: str
    state_dict: str | None = None
    output: str | None = None
    sha256: str | None = None
    trust: bool = False
    device: str = "cpu"
    threads: int = 1
    storage_options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelArtifact:
    """The bytes (a single file) or local directory a model is loaded from, and their content hash.

    A model given as user code only (``module:attr`` without weights) has
    neither bytes nor a directory; its ``sha256`` is that of its name.
    """

    uri: str
    sha256: str
    data: bytes | None = None
    directory: str | None = None

    def content(self) -> bytes:
        """The file's content; a flavor that needs a file calls this."""
        if self.data is None:
            from squall.errors import ModelLoadError

            raise ModelLoadError(f"{self.uri}: expected a model file, found a directory or code reference")
        return self.data


class LoadedModel(Protocol):
    """A model ready to serve batches in one worker.

    ``call`` receives one batch (in the job's ``batch_format``, or
    ``batch_format`` below when the job leaves it ``auto``) and returns one
    prediction per row: a 1-D array, a 2-D array, a tuple of arrays (one
    column each), a DataFrame, a dict of arrays or an Arrow table.
    ``labels`` names the columns of a 2-D output (``classes_`` for
    ``predict_proba``), or is ``None``. ``vector_output`` says a 2-D output
    is one vector per row (an embedding), written as one list column rather
    than a column per position, when the job leaves ``output_layout`` ``auto``.
    """

    labels: Sequence[Any] | None
    batch_format: str
    vector_output: bool

    def call(self, batch: Any) -> Any:
        """Predict one batch."""


class Flavor(Protocol):
    """Loads one kind of model; registered in :mod:`squall.models.registry`.

    ``runs_code_on_load`` marks formats whose loading executes code stored in
    the model (pickle and what is built on it): squall refuses those from a
    remote URI unless the job trusts the model.
    """

    name: str
    runs_code_on_load: bool

    def load(self, ref: ModelRef, artifact: ModelArtifact) -> LoadedModel:
        """Load ``ref`` from ``artifact`` or raise :class:`squall.errors.ModelLoadError` saying what to change."""
