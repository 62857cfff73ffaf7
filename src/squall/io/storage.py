"""Where bytes live: local disk or an object store, and how squall reaches the store.

Credentials and endpoints come the standard way: the store's own environment
variables and profiles (``AWS_ACCESS_KEY_ID``, ``AWS_PROFILE``,
``AWS_ENDPOINT_URL``...), then ``storage_options`` and ``endpoint_url`` from
the spec. The spec's options are installed as fsspec's per-protocol
configuration (``fsspec.config.conf``) in every process of a job, the
coordinator's and each worker's, so that every ``fsspec.open`` of a remote URL
(inputs, parts, the manifest, a model) uses them without each call carrying them.

Object stores have no rename: a "rename" is a copy of the whole object. The
committer therefore treats them differently (:mod:`squall.io.commit`), and
readers fetch byte ranges instead of whole objects.
"""

from __future__ import annotations

import errno
import importlib
import os
import random
import re
import time
from functools import cache
from typing import Any, Callable, Iterable, Mapping, TypeVar

import fsspec
from fsspec.core import split_protocol, url_to_fs
from fsspec.implementations.local import LocalFileSystem

from squall.errors import MissingDependency, causes

LOCAL_PROTOCOLS = frozenset({"file", "local"})
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:/")
_S3_PROTOCOLS = frozenset({"s3", "s3a"})
S3_MAX_ATTEMPTS = 8
S3_CONNECTIONS = 32
"""Connections botocore keeps per S3 client: as many as planning reads footers at once."""
_TRANSIENT_ERRNOS = frozenset({errno.EBUSY, errno.EAGAIN, errno.ETIMEDOUT, errno.ECONNRESET, errno.ECONNABORTED,
                               errno.EPIPE, getattr(errno, "EREMOTEIO", errno.EIO)})
"""s3fs turns 503 SlowDown into ``EBUSY`` and 500 InternalError into ``EREMOTEIO``."""
_TRANSIENT_CLIENT_ERRORS = {
    "botocore.exceptions": ("HTTPClientError", "ConnectionError", "ResponseStreamingError", "IncompleteReadError"),
    "aiohttp": ("ClientConnectionError", "ClientPayloadError"),
}
"""The S3 client's errors for a dropped or timed-out connection, by module (present with the s3 extra)."""
T = TypeVar("T")
_INSTALL_HINTS = {
    "s3": "pip install 'squall[s3]'",
    "s3a": "pip install 'squall[s3]'",
    "gs": "pip install gcsfs",
    "gcs": "pip install gcsfs",
    "az": "pip install adlfs",
    "abfs": "pip install adlfs",
    "abfss": "pip install adlfs",
}



def protocol(uri: str) -> str:
    """The URL's protocol; ``file`` for a plain path."""
    return split_protocol(uri)[0] or "file"


def is_remote(uri: str) -> bool:
    """Whether ``uri`` names a place other than this machine's filesystem (``s3://``, ``https://``, an
    MLflow ``runs:/`` URI), in any link of an fsspec chain (``simplecache::https://…``)."""
    return any(_SCHEME.match(part) and not part.startswith(("file:", "local:")) for part in uri.split("::"))


def connection_options(storage_options: Mapping[str, Any], endpoint_url: str | None) -> dict[str, Any]:
    """The keyword arguments a remote filesystem is created with: the spec's options plus the endpoint."""
    options = dict(storage_options)
    if endpoint_url:
        options["endpoint_url"] = endpoint_url
    return options


def configure(options: Mapping[str, Any], uris: Iterable[str]) -> None:
    """Make every remote filesystem of ``uris``' protocols in this process use ``options``.

    Checks that each remote protocol's package is installed, with the command
    that installs it when not.
    """
    baseline = _baseline()
    for name in {protocol(uri) for uri in uris if is_remote(uri)} - LOCAL_PROTOCOLS:
        _require(name)
        # Workers write objects the coordinator lists; a cached listing would hide them.
        fsspec.config.conf[name] = _with_s3_defaults(name, {**baseline.get(name, {}), "use_listings_cache": False, **options})


def _with_s3_defaults(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """S3 options with squall's defaults under the user's own ``config_kwargs`` (and the endpoint of
    ``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL`` made explicit): more botocore retries than its
    default five attempts (a store that throttles (503 SlowDown) or drops connections under load would
    otherwise fail whole chunks), and :data:`S3_CONNECTIONS` pooled connections instead of its ten, so that
    planning's concurrent footer reads are not queued behind each other."""
    if name not in _S3_PROTOCOLS:
        return options
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint and "endpoint_url" not in options and "endpoint_url" not in (options.get("client_kwargs") or {}):
        # botocore reads the variable itself, but fsspec caches filesystems by their options: without the endpoint
        # among them, a process whose variable changed (a service, a test session) is handed a client of the old one.
        options = {**options, "endpoint_url": endpoint}
    defaults: dict[str, Any] = {"max_pool_connections": S3_CONNECTIONS}
    if not os.environ.get("AWS_MAX_ATTEMPTS"):
        defaults["retries"] = {"max_attempts": S3_MAX_ATTEMPTS, "mode": "standard"}
    return {**options, "config_kwargs": {**defaults, **(options.get("config_kwargs") or {})}}


@cache
def _baseline() -> dict[str, dict[str, Any]]:
    """fsspec's configuration before any job changed it (its files and ``FSSPEC_*`` variables), so that
    one job's options never leak into the next job run in the same process."""
    return {name: dict(values) for name, values in fsspec.config.conf.items()}


def _require(name: str) -> None:
    try:
        fsspec.get_filesystem_class(name)
    except (ImportError, ValueError) as exc:
        hint = _INSTALL_HINTS.get(name, "install the fsspec implementation for it")
        raise MissingDependency(f"cannot reach {name}:// URLs ({exc}); {hint}") from None


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` (or an error in its chain) says the store may answer next time: throttling (503),
    a server error (500), a dropped or timed-out connection. A missing file or a refused permission is not."""
    connection_errors: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError, *_client_connection_errors())
    return any(
        isinstance(cause, connection_errors) or (isinstance(cause, OSError) and cause.errno in _TRANSIENT_ERRNOS)
        for cause in causes(exc)
    )


@cache
def _client_connection_errors() -> tuple[type[BaseException], ...]:
    """The classes of :data:`_TRANSIENT_CLIENT_ERRORS` that are installed, imported on first need."""
    found: list[type[BaseException]] = []
    for module_name, names in _TRANSIENT_CLIENT_ERRORS.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        found.extend(getattr(module, name) for name in names)
    return tuple(found)


def retrying(call: Callable[[], T], attempts: int = 5, base_s: float = 0.2, max_s: float = 5.0) -> T:
    """``call()``, called again after a transient store error (:func:`is_transient`) with exponential backoff
    and full jitter, up to ``attempts`` calls in all; any other error, or the last, is raised."""
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Exception as exc:
            if attempt == attempts or not is_transient(exc):
                raise
            time.sleep(random.uniform(0, min(base_s * 2 ** (attempt - 1), max_s)))
    raise AssertionError("unreachable: the last attempt returns or raises")


def read_range(uri: str, start: int, stop: int) -> bytes:
    """Bytes ``[start, stop)`` of ``uri`` (fewer at its end) in one read: on an object store one ranged GET,
    without the request for the object's size that an opened file makes before its first read."""
    filesystem, path = url_to_fs(uri)
    return bytes(filesystem.cat_file(path, start=start, end=stop))


def open_ranged(uri: str) -> Any:
    """``uri`` opened for reading by byte ranges: on an object store each read is one ranged GET.

    fsspec's default read-ahead fetches a whole block (50 MB on S3) past every
    read; a byte-range reader already asks for exactly what it needs.
    """
    if "::" not in uri and not is_remote(uri):  # this machine's disk: a plain file, without fsspec's layers
        return open(LocalFileSystem._strip_protocol(uri), "rb")
    filesystem, path = url_to_fs(uri)
    if is_remote(uri):
        return filesystem.open(path, "rb", cache_type="none")
    return filesystem.open(path, "rb")
