"""What a file-arrival trigger sees: a listed file, which names count, and the lister contract.

Both listers, a local folder's (:mod:`squall.triggers.file_arrival`) and an
object-store prefix's (:mod:`squall.triggers.object_prefix`), speak these.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Protocol

from squall.triggers.rules import WatchRule


@dataclass(frozen=True)
class Listed:
    """A file as one listing saw it."""

    uri: str
    size: int
    mtime: float | None = None
    etag: str | None = None

    def signature(self) -> tuple[int, float | None, str | None]:
        """What changes when the file does: size, modification time, ETag."""
        return (self.size, self.mtime, self.etag)


class Lister(Protocol):
    """Lists the files a rule watches. Contract: every file that matches the rule, none that its ``ignore`` globs match."""

    def list(self) -> list[Listed]: ...


def counts(rule: WatchRule, name: str) -> bool:
    """Whether a file called ``name`` counts under ``rule`` (matches the pattern, not a partial or hidden name)."""
    return fnmatch.fnmatch(name, rule.pattern) and not any(fnmatch.fnmatch(name, glob) for glob in rule.ignore)
