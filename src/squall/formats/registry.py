"""Input formats by name, imported on first use, and how a format is recognised from a path or URL.

Adding a format is one module implementing :class:`squall.formats.base.InputFormat`
and one :class:`~squall.registry.Plugin` line in ``FORMATS`` (with the
extensions or URL schemes that name it), or, from another package, an entry
point in ``squall.formats``.
"""

from __future__ import annotations

from functools import cache

from squall.errors import InputError
from squall.formats.base import InputFormat
from squall.registry import Plugin, Registry

FORMATS: Registry[type[InputFormat]] = Registry("input format", "squall.formats", (
    Plugin("parquet", "squall.formats.parquet:ParquetFormat", extensions=(".parquet", ".pq")),
    Plugin("csv", "squall.formats.csv:CsvFormat", extensions=(".csv", ".tsv", ".txt")),
    Plugin("jsonl", "squall.formats.jsonl:JsonlFormat", extensions=(".jsonl", ".ndjson", ".json")),
    Plugin("sql", "squall.formats.sql:SqlFormat", "sql", schemes=("postgresql", "postgres", "sqlite")),
), error=InputError)

_COMPRESSIONS = (".gz", ".bz2", ".xz")  # the ones Python reads without extra packages


def format_names() -> list[str]:
    """Every registered input format."""
    return FORMATS.names()


def _without_compression(path: str) -> str:
    lower = path.lower()
    for suffix in _COMPRESSIONS:
        if lower.endswith(suffix):
            return lower[: -len(suffix)]
    return lower


def known_extension(path: str) -> bool:
    """Whether ``path`` ends in an extension that names a format (after any compression suffix)."""
    return FORMATS.by_extension(_without_compression(path)) is not None


def detect_format(path: str) -> str:
    """The format that serves ``path``'s URL scheme (``sql`` for a database URL), or that its extension names
    (``data.csv.gz`` is CSV, read through gzip)."""
    found = FORMATS.by_scheme(path) or FORMATS.by_extension(_without_compression(path))
    if found is None:
        raise InputError(
            f"{path}: cannot tell the format from the extension; "
            f"set `format` (--format) to one of {', '.join(FORMATS.names())}"
        )
    return found


@cache
def get_format(name: str) -> InputFormat:
    """The format registered as ``name``."""
    return FORMATS.load(name)()
