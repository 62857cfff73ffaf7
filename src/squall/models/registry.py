"""Model flavors by name, imported on first use, and the per-process warm model cache.

Adding a flavor is one module with a class implementing
:class:`squall.models.base.Flavor` and one line in ``_FLAVORS`` (plus, if it
can be recognised from a file name, one in ``_EXTENSIONS``).
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from squall.errors import ModelLoadError
from squall.models.base import Flavor, LoadedModel, ModelRef
from squall.models.code import is_code_ref

_FLAVORS = {
    "joblib": "squall.models.pickled:JoblibFlavor",
    "pickle": "squall.models.pickled:PickleFlavor",
    "callable": "squall.models.code:CodeFlavor",
}

_EXTENSIONS = {".joblib": "joblib", ".pkl": "pickle", ".pickle": "pickle"}

_warm: dict[tuple[str, str, str, Any], LoadedModel] = {}


def flavor_names() -> list[str]:
    """Every registered flavor."""
    return list(_FLAVORS)


def detect_flavor(uri: str) -> str:
    """The flavor ``uri`` names: ``module:attr`` is user code, else the file extension decides."""
    if is_code_ref(uri):
        return "callable"
    for ext, name in _EXTENSIONS.items():
        if uri.lower().endswith(ext):
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


def load_warm(ref: ModelRef) -> LoadedModel:
    """``ref`` loaded once per process: later calls with the same file (same size and mtime) reuse it."""
    flavor = ref.flavor if ref.flavor != "auto" else detect_flavor(ref.uri)
    key = (ref.uri, flavor, ref.method, _file_stamp(ref.uri))
    if key not in _warm:
        _warm[key] = get_flavor(flavor).load(ModelRef(ref.uri, flavor, ref.method))
    return _warm[key]


def _file_stamp(uri: str) -> Any:
    try:
        stat = os.stat(uri)
    except OSError:
        return None
    return (stat.st_size, stat.st_mtime_ns)
