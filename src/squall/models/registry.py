"""Model flavors by name, imported on first use, how a flavor is recognised, and the per-process warm cache.

Adding a flavor is one module with a class implementing
:class:`squall.models.base.Flavor` and one :class:`~squall.registry.Plugin`
line in ``FLAVORS`` (with the extensions, directory markers or file heads that
name it), or, from another package, an entry point in ``squall.flavors``.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

import fsspec

from squall.errors import ModelLoadError
from squall.models.artifact import check_trust, fetch
from squall.models.base import Flavor, LoadedModel, ModelRef
from squall.models.code import is_code_ref
from squall.registry import Plugin, Registry

FLAVORS: Registry[type[Flavor]] = Registry("model flavor", "squall.flavors", (
    Plugin("joblib", "squall.models.pickled:JoblibFlavor", "sklearn", extensions=(".joblib",)),
    Plugin("pickle", "squall.models.pickled:PickleFlavor", extensions=(".pkl", ".pickle")),
    Plugin("callable", "squall.models.code:CodeFlavor"),
    Plugin("onnx", "squall.models.onnx_model:OnnxFlavor", "onnx", extensions=(".onnx",)),
    Plugin("torch", "squall.models.torch_model:TorchFlavor", "torch", extensions=(".pt", ".torchscript", ".ptl")),
    Plugin("sentence-transformers", "squall.models.sentence_model:SentenceTransformersFlavor", "text",
           markers=("modules.json", "config_sentence_transformers.json")),
    Plugin("xgboost", "squall.models.xgboost_model:XGBoostFlavor", "xgboost", extensions=(".ubj",),
           sniff=((".json", b'"learner"'),)),
    Plugin("lightgbm", "squall.models.lightgbm_model:LightGBMFlavor", "lightgbm", sniff=((".txt", b"tree\n"),)),
    Plugin("mlflow", "squall.models.mlflow_model:MLflowFlavor", "mlflow", markers=("MLmodel",),
           schemes=("runs", "models", "mlflow-artifacts")),
), error=ModelLoadError)

_warm: dict[tuple[Any, ...], LoadedModel] = {}


def flavor_names() -> list[str]:
    """Every registered flavor."""
    return FLAVORS.names()


def detect_flavor(uri: str, state_dict: str | None = None) -> str:
    """The flavor ``uri`` names: user code, a scheme a flavor serves, a model directory holding a flavor's
    marker file, or a file recognised by its extension (or, for an extension many share, by its first bytes)."""
    if is_code_ref(uri):
        return "torch" if state_dict else "callable"
    scheme = uri.split(":/", 1)[0] if ":/" in uri else ""
    by_scheme = next((p.name for p in FLAVORS.plugins() if scheme and scheme in p.schemes), None)
    if by_scheme:
        return by_scheme
    if os.path.isdir(uri):
        for plugin in FLAVORS.plugins():
            if any(os.path.exists(os.path.join(uri, marker)) for marker in plugin.markers):
                return plugin.name
    found = FLAVORS.by_extension(uri)
    if found:
        return found
    lowered = uri.lower()
    for plugin in FLAVORS.plugins():
        if any(lowered.endswith(ext) and signature in _head(uri) for ext, signature in plugin.sniff):
            return plugin.name
    raise ModelLoadError(f"{uri}: cannot tell how to load this model; set `flavor` to one of {', '.join(FLAVORS.names())}")


def get_flavor(name: str) -> Flavor:
    """The flavor registered as ``name``."""
    return FLAVORS.load(name)()


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
