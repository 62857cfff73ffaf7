"""File arrival under an object-store prefix (``s3://bucket/inbox/``): polling with listings.

Object stores send no change events squall can rely on everywhere, so the
prefix is listed every ``poll_s`` through fsspec, with the template's
``storage_options`` and ``endpoint_url`` and no listing cache. An object counts
once two listings at least ``settle_s`` apart saw the same size and ETag (an
upload in parts becomes visible whole, but a writer may replace it at once).
"""

from __future__ import annotations

import fnmatch
from typing import Any

from fsspec.core import url_to_fs

from squall.errors import InputError, MissingDependency
from squall.io.storage import connection_options, protocol
from squall.triggers.listing import Listed, counts
from squall.triggers.rules import WatchRule


class PrefixLister:
    """The objects under a prefix URL (and deeper, when ``recursive``)."""

    def __init__(self, rule: WatchRule) -> None:
        self.rule = rule
        self.protocol = protocol(rule.location)
        options = connection_options(rule.template.get("storage_options") or {}, rule.template.get("endpoint_url"))
        try:  # its own filesystem instance: fsspec's process-wide configuration belongs to the jobs
            self.fs, self.prefix = url_to_fs(rule.location, skip_instance_cache=True, use_listings_cache=False, **options)
        except ImportError as exc:
            raise MissingDependency(f"cannot watch {rule.location}: {exc}; install the package for {self.protocol}:// "
                                     "(pip install 'squall[s3]' for s3://)") from None
        self.prefix = self.prefix.rstrip("/")

    def list(self) -> list[Listed]:
        try:
            infos: Any = (self.fs.find(self.prefix, detail=True) if self.rule.recursive
                          else self.fs.ls(self.prefix, detail=True, refresh=True))
        except FileNotFoundError:
            return []  # an empty prefix does not exist on an object store until something is put there
        except OSError as exc:
            raise InputError(f"cannot list {self.rule.location}: {exc}; check the URL, endpoint and credentials") from exc
        entries = infos.values() if isinstance(infos, dict) else infos
        found = []
        for info in entries:
            name = str(info["name"]).rstrip("/")
            relative = name[len(self.prefix):].lstrip("/").split("/")
            if info.get("type") != "file" or any(counts_as_ignored(self.rule, part) for part in relative[:-1]):
                continue
            if counts(self.rule, relative[-1]):
                etag = info.get("ETag") or info.get("etag") or info.get("md5Hash")
                found.append(Listed(f"{self.protocol}://{name}", int(info.get("size") or 0), None, str(etag) if etag else None))
        return sorted(found, key=lambda item: item.uri)


def counts_as_ignored(rule: WatchRule, name: str) -> bool:
    """Whether a folder called ``name`` is hidden or partial under ``rule``."""
    return any(fnmatch.fnmatch(name, glob) for glob in rule.ignore)
