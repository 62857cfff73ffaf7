"""Input formats by name, imported on first use; and the file extensions that name them.

Adding a format is one module implementing :class:`squall.formats.base.InputFormat`
and one line in ``_FORMATS`` (plus its extensions in ``_EXTENSIONS``).
"""

from __future__ import annotations

import importlib
from functools import cache

from squall.errors import InputError
from squall.formats.base import InputFormat
from squall.sql.drivers import is_database_url

_FORMATS = {
    "parquet": "squall.formats.parquet:ParquetFormat",
    "csv": "squall.formats.csv:CsvFormat",
    "jsonl": "squall.formats.jsonl:JsonlFormat",
    "sql": "squall.formats.sql:SqlFormat",
}

_EXTENSIONS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}


def format_names() -> list[str]:
    """Every registered input format."""
    return list(_FORMATS)


_COMPRESSIONS = (".gz", ".bz2", ".xz")  # the ones Python reads without extra packages


def _without_compression(path: str) -> str:
    lower = path.lower()
    for suffix in _COMPRESSIONS:
        if lower.endswith(suffix):
            return lower[: -len(suffix)]
    return lower


def known_extension(path: str) -> bool:
    """Whether ``path`` ends in an extension that names a format (after any compression suffix)."""
    return any(_without_compression(path).endswith(ext) for ext in _EXTENSIONS)


def detect_format(path: str) -> str:
    """The format named by ``path``'s extension (``data.csv.gz`` is CSV, read through gzip), or ``sql`` for a database URL."""
    if is_database_url(path):
        return "sql"
    lower = _without_compression(path)
    for ext, name in _EXTENSIONS.items():
        if lower.endswith(ext):
            return name
    raise InputError(
        f"{path}: cannot tell the format from the extension; "
        f"set `format` (--format) to one of {', '.join(_FORMATS)}"
    )


@cache
def get_format(name: str) -> InputFormat:
    """The format registered as ``name``."""
    try:
        module_name, class_name = _FORMATS[name].split(":")
    except KeyError:
        raise InputError(f"unknown input format {name!r}; use one of {', '.join(_FORMATS)}") from None
    implementation: InputFormat = getattr(importlib.import_module(module_name), class_name)()
    return implementation
