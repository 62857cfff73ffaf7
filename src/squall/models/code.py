"""User code named ``module:attr``: the import rule shared by models and pre/post-processing steps."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from squall.errors import ModelLoadError
from squall.models.base import ModelArtifact, ModelRef


def is_code_ref(ref: str) -> bool:
    """Whether ``ref`` looks like ``package.module:attr`` rather than a path or URL."""
    if "://" in ref or ref.count(":") != 1 or os.path.exists(ref):
        return False
    module, attr = ref.split(":")
    return bool(module) and bool(attr) and all(part.isidentifier() for part in [*module.split("."), *attr.split(".")])


def resolve(ref: str, what: str) -> Any:
    """The object ``module:attr`` names, importing the module (the working directory is importable)."""
    if not is_code_ref(ref):
        raise ModelLoadError(f"{what} {ref!r} is not of the form `package.module:attr`")
    module_name, attr_path = ref.split(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelLoadError(f"{what} {ref!r}: cannot import {module_name!r} ({exc}); is it on PYTHONPATH?") from exc
    for attr in attr_path.split("."):
        try:
            target = getattr(target, attr)
        except AttributeError:
            raise ModelLoadError(f"{what} {ref!r}: module {module_name!r} has no attribute {attr!r}") from None
    return target


class CodeModel:
    """A function called per batch, or a class constructed once per worker whose method is called per batch."""

    labels = None
    batch_format = "pandas"
    vector_output = False

    def __init__(self, target: Any, method: str) -> None:
        self._call = _bound_call(target, method)
        self.labels = getattr(getattr(self._call, "__self__", None), "classes_", None)

    def call(self, batch: Any) -> Any:
        return self._call(batch)


def _bound_call(target: Any, method: str) -> Any:
    if isinstance(target, type):
        try:
            instance = target()
        except Exception as exc:
            raise ModelLoadError(f"constructing {target.__name__}() failed: {type(exc).__name__}: {exc}") from exc
        return _method_or_call(instance, method)
    if callable(target):
        return target
    return _method_or_call(target, method)


def _method_or_call(instance: Any, method: str) -> Any:
    bound = getattr(instance, method, None)
    if callable(bound):
        return bound
    if callable(instance):
        return instance
    raise ModelLoadError(f"{type(instance).__name__} has no method {method!r} and is not callable; set `method`")


class CodeFlavor:
    """``module:attr`` user code."""

    name = "callable"
    runs_code_on_load = False  # the code is the user's own, imported from their environment

    def load(self, ref: ModelRef, artifact: ModelArtifact) -> CodeModel:
        return CodeModel(resolve(ref.uri, "model"), ref.method)
