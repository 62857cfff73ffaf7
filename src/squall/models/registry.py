"""Model flavors by name, imported on first use, how a flavor is recognised, and the per-process warm cache.

Adding a flavor is one module with a class implementing
:class:`squall.models.base.Flavor` and one line in ``_FLAVORS`` (plus, if it
can be recognised from a file name, one in ``_EXTENSIONS``).
"""

from __future__ import annotations

import importlib
import os
from dataclasses import replace
from typing import Any

import fsspec

from squall.errors import ModelLoadError
from squall.models.artifact import check_trust, fetch
from squall.models.base import Flavor, LoadedModel, ModelRef
from squall.models.code import is_code_ref

_FLAVORS = {
    "joblib": "squall.models.pickled:JoblibFlavor",
    "pickle": "squall.models.pickled:PickleFlavor",
    "callable": "squall.models.code:CodeFlavor",
    "onnx": "squall.models.onnx_model:OnnxFlavor",
    "torch": "squall.models.torch_model:TorchFlavor",
    "sentence-transformers": "squall.models.sentence_model:SentenceTransformersFlavor",
    "xgboost": "squall.models.xgboost_model:XGBoostFlavor",
    "lightgbm": "squall.models.lightgbm_model:LightGBMFlavor",
    "mlflow": "squall.models.mlflow_model:MLflowFlavor",
}

_EXTENSIONS = {
    ".joblib": "joblib",
    ".pkl": "pickle",
    ".pickle": "pickle",
    ".onnx": "onnx",
    ".pt": "torch",
    ".torchscript": "torch",
    ".ptl": "torch",
    ".ubj": "xgboost",
}

# Extensions that many formats share: the first bytes of the file decide.
_SNIFFED = {".json": ("xgboost", b'"learner"'), ".txt": ("lightgbm", b"tree\n")}

_DIRECTORY_MARKERS = (("MLmodel", "mlflow"), ("modules.json", "sentence-transformers"),
                      ("config_sentence_transformers.json", "sentence-transformers"))

_MLFLOW_SCHEMES = ("runs:/", "models:/", "mlflow-artifacts:/")

_warm: dict[tuple[Any, ...], LoadedModel] = {}


def flavor_names() -> list[str]:
    """Every registered flavor."""
    return list(_FLAVORS)


def detect_flavor(uri: str, state_dict: str | None = None) -> str:
    """The flavor ``uri`` names: user code, a known model directory, or a file recognised by its extension."""
    if is_code_ref(uri):
        return "torch" if state_dict else "callable"
    if uri.startswith(_MLFLOW_SCHEMES):
        return "mlflow"
    if os.path.isdir(uri):
        for marker, name in _DIRECTORY_MARKERS:
            if os.path.exists(os.path.join(uri, marker)):
                return name
    lowered = uri.lower()
    for ext, name in _EXTENSIONS.items():
        if lowered.endswith(ext):
            return name
    for ext, (name, signature) in _SNIFFED.items():
        if lowered.endswith(ext) and signature in _head(uri):
            return name
    raise ModelLoadError(f"{uri}: cannot tell how to load this model; set `flavor` to one of {', '.join(_FLAVORS)}")


def get_flavor(name: str) -> Flavor:
    """The flavor registered as ``name``."""
    try:
        module_name, class_name = _FLAVORS[name].split(":")
    except KeyError:
        raise ModelLoadError(f"unknown model flavor {name!r}; use one of {', '.join(_FLAVORS)}") from None
    flavor: Flavor = getattr(importlib.import_module(module_name), class_name)()
    return flavor


def resolved(ref: ModelRef) -> ModelRef:
    """``ref`` with its flavor decided, after the trust rule for remote models that run code on load."""
    name = ref.flavor if ref.flavor != "auto" else detect_flavor(ref.uri, ref.state_dict)
    if ref.state_dict and not (name == "torch" and is_code_ref(ref.uri)):
        raise ModelLoadError(
            f"`state_dict` gives the weights of a `package.module:Class` PyTorch model; {ref.uri} is a {name} model: drop it"
        )
    for location in filter(None, (ref.uri, ref.state_dict)):
        check_trust(location, name, get_flavor(name).runs_code_on_load, ref.trust)
    return replace(ref, flavor=name)


def load_warm(ref: ModelRef) -> LoadedModel:
    """``ref`` loaded once per process: a later call for the same content (by sha256) reuses it."""
    ref = resolved(ref)
    artifact = fetch(ref)
    key = (artifact.sha256, ref.flavor, ref.method, ref.output, ref.device, ref.threads)
    if key not in _warm:
        _warm[key] = get_flavor(ref.flavor).load(ref, artifact)
    return _warm[key]


def _head(uri: str, size: int = 4096) -> bytes:
    try:
        with fsspec.open(uri, "rb") as handle:
            head: bytes = handle.read(size)
            return head
    except Exception:  # unreadable here: the load that follows reports why
        return b""
