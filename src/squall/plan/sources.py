"""Turn the user's input patterns (paths, directories, globs, fsspec URLs) into a sorted list of files."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, Iterable

from fsspec.core import url_to_fs

from squall.errors import InputError
from squall.formats.base import SourceFile
from squall.formats.registry import known_extension
from squall.io.storage import is_transient
from squall.sql.drivers import is_database_url

LIST_THREADS = 16
"""Folders of an object-store prefix listed at once."""


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
    elif (entry := _info(fs, path, pattern))["type"] == "directory":
        found = _find(fs, path)
        entries = [e for e in found if _is_input_name(e["name"])]
        if not entries:
            raise InputError(_no_input_files(pattern, sorted(e["name"] for e in found)))
    else:
        entries = [entry]
    return [SourceFile(uri=_uri(fs, e["name"]), size=int(e["size"] or 0), version=_version(e)) for e in entries]


def _info(fs: Any, path: str, pattern: str) -> dict[str, Any]:
    """What ``path`` is (one request on an object store for a file); a store's transient error is raised
    as it is, to be tried again, and any other is an :class:`InputError` naming the pattern."""
    try:
        return dict(fs.info(path))
    except OSError as exc:
        if is_transient(exc):
            raise
        raise InputError(f"{pattern}: no such file or directory") from None


def _find(fs: Any, path: str) -> list[dict[str, Any]]:
    """Every file under the directory ``path``, in no particular order.

    On an object store a prefix's listing is a chain of pages, each asked for
    with the last one's token; so the first level is listed once, and each
    folder under it (``day=…/``) is listed on a thread of its own, :data:`LIST_THREADS` at a time.
    """
    if "file" in fs.protocol:
        return list(fs.find(path, detail=True).values())
    top = fs.ls(path, detail=True)
    files = [entry for entry in top if entry["type"] != "directory"]
    folders = [entry["name"] for entry in top if entry["type"] == "directory"]
    if folders:
        with ThreadPoolExecutor(min(LIST_THREADS, len(folders)), thread_name_prefix="squall-list") as pool:
            for found in pool.map(partial(fs.find, detail=True), folders):
                files.extend(found.values())
    return files


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
