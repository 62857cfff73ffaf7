"""Turn the user's input patterns (paths, directories, globs, fsspec URLs) into a sorted list of files."""

from __future__ import annotations

from typing import Any, Iterable

from fsspec.core import url_to_fs

from squall.errors import InputError
from squall.formats.base import SourceFile
from squall.formats.registry import known_extension
from squall.sql.drivers import is_database_url


def list_inputs(patterns: Iterable[str], storage_options: dict[str, Any] | None = None) -> list[SourceFile]:
    """Every file the patterns name, once each, in a stable order; a database URL is one source as it is.

    A glob that matches nothing, a missing path or a directory with no input
    files is an :class:`InputError` naming the pattern.
    """
    found: dict[str, SourceFile] = {}
    for pattern in patterns:
        if is_database_url(pattern):
            found.setdefault(pattern, SourceFile(uri=pattern, size=0))
            continue
        for file in _expand(pattern, storage_options or {}):
            found.setdefault(file.uri, file)
    return sorted(found.values(), key=lambda f: f.uri)


def _expand(pattern: str, storage_options: dict[str, Any]) -> list[SourceFile]:
    try:
        fs, path = url_to_fs(pattern, **storage_options)
    except (ImportError, ValueError) as exc:
        raise InputError(f"{pattern}: cannot open this location ({exc})") from None
    if has_magic(path):
        entries = [e for e in fs.glob(path, detail=True).values() if e["type"] == "file"]
        if not entries:
            raise InputError(f"{pattern}: the glob matched no files; check the pattern and the current directory")
    elif fs.isdir(path):
        found = fs.find(path, detail=True)
        entries = [e for e in found.values() if _is_input_name(e["name"])]
        if not entries:
            raise InputError(_no_input_files(pattern, sorted(found)))
    elif fs.isfile(path):
        entries = [fs.info(path)]
    else:
        raise InputError(f"{pattern}: no such file or directory")
    return [SourceFile(uri=_uri(fs, e["name"]), size=int(e["size"] or 0), version=_version(e)) for e in entries]


def _no_input_files(pattern: str, held: list[str]) -> str:
    """Why a directory gave no input: what it holds instead, and how to read those files anyway."""
    names = [name.rsplit("/", 1)[-1] for name in held]
    what = f"it holds {', '.join(names[:3])}{' and more' if len(names) > 3 else ''}" if names else "it is empty"
    return (
        f"{pattern}: the directory holds no .parquet, .csv or .jsonl files ({what}); to read other files, "
        f"name them (e.g. `{pattern.rstrip('/')}/*`) and set `format` (--format)"
    )


def _version(entry: dict[str, Any]) -> str:
    """What changes when the file's content does: ETag on object stores, else the modification time."""
    for name in ("ETag", "etag", "mtime", "LastModified", "last_modified", "updated"):
        if entry.get(name) is not None:
            return str(entry[name])
    return ""


def has_magic(path: str) -> bool:
    """Whether ``path`` is a glob pattern."""
    return any(char in path for char in "*?[")


def _is_input_name(path: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    return not name.startswith(("_", ".")) and known_extension(name)


def _uri(fs: Any, path: str) -> str:
    return path if "file" in fs.protocol else fs.unstrip_protocol(path)
