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

import re
from functools import cache
from typing import Any, Iterable, Mapping

import fsspec
from fsspec.core import split_protocol, url_to_fs

from squall.errors import MissingDependency

LOCAL_PROTOCOLS = frozenset({"file", "local"})
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:/")
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
        fsspec.config.conf[name] = {**baseline.get(name, {}), "use_listings_cache": False, **options}


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


def open_ranged(uri: str) -> Any:
    """``uri`` opened for reading by byte ranges: on an object store each read is one ranged GET.

    fsspec's default read-ahead fetches a whole block (50 MB on S3) past every
    read; a byte-range reader already asks for exactly what it needs.
    """
    filesystem, path = url_to_fs(uri)
    if is_remote(uri):
        return filesystem.open(path, "rb", cache_type="none")
    return filesystem.open(path, "rb")
