"""sentence-transformers models from a local directory: one text column in, one embedding vector per row out.

The model is read from disk only: the Hugging Face hub is switched off
(``HF_HUB_OFFLINE``) and remote code is never trusted, so loading can
neither download nor run anything. Each batch is handed to ``encode`` whole;
it sorts the texts by length and runs them in slices of ``ENCODE_BATCH_SIZE``.
"""

from __future__ import annotations

import os
from typing import Any

from squall.errors import ModelLoadError
from squall.io.storage import is_remote
from squall.models.base import ModelArtifact, ModelRef
from squall.models.device import torch_device
from squall.models.matrix import column_texts
from squall.models.requirement import require

ENCODE_BATCH_SIZE = 64


class SentenceModel:
    """A ``SentenceTransformer`` whose ``encode`` turns each text into a vector."""

    labels = None
    batch_format = "arrow"
    vector_output = True

    def __init__(self, model: Any) -> None:
        self._model = model

    def call(self, batch: Any) -> Any:
        texts = column_texts(batch)
        if any(not isinstance(text, str) for text in texts):
            raise TypeError("a row has no text (null or not a string); a text model needs a string in every row")
        return self._model.encode(texts, batch_size=ENCODE_BATCH_SIZE, convert_to_numpy=True, show_progress_bar=False)


class SentenceTransformersFlavor:
    """A directory written by ``SentenceTransformer.save`` (it holds ``modules.json``)."""

    name = "sentence-transformers"
    runs_code_on_load = False

    def load(self, ref: ModelRef, artifact: ModelArtifact) -> SentenceModel:
        if is_remote(ref.uri) or artifact.directory is None:
            raise ModelLoadError(f"{ref.uri}: a sentence-transformers model is read from a local directory; copy it here first")
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        _quiet_progress_bars()
        library = require("sentence_transformers", "text")
        import torch

        torch.set_num_threads(ref.threads)
        try:
            model = library.SentenceTransformer(artifact.directory, device=torch_device(ref), trust_remote_code=False)
        except ModelLoadError:
            raise
        except Exception as exc:
            raise ModelLoadError(f"{ref.uri}: sentence-transformers cannot load this directory ({type(exc).__name__}: {exc})") from exc
        return SentenceModel(model)


def _quiet_progress_bars() -> None:
    """No loading progress bars: they go to worker logs, and tqdm's monitor thread would make forking unsafe."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import tqdm

    tqdm.tqdm.monitor_interval = 0
    transformers = require("transformers", "text")
    transformers.utils.logging.disable_progress_bar()
