"""Importing a flavor's library on first use, with the install command in the error when it is missing."""

from __future__ import annotations

import importlib
from types import ModuleType

from squall.errors import ModelLoadError


def require(module: str, extra: str) -> ModuleType:
    """``module`` imported, or a :class:`ModelLoadError` naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ModelLoadError(
            f"this model needs {module.split('.')[0]!r}, which is not installed ({exc}); "
            f"install it with: pip install 'squall[{extra}]'"
        ) from exc
