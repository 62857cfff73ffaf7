"""``allowed_roots``: input and output locations a client may name.

A local path is resolved the way the operating system will follow it
(``..`` collapsed, every symlink followed, for a directory or glob every
file it holds as well) and must then lie under the resolved root. A URL
(``s3://bucket/prefix``) must start with a root and may not contain ``..``
segments. A URL of a scheme that names no place (``data:…``, which carries
its content inline) is refused. An empty list of roots allows anything.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Iterable, Sequence

from squall.errors import PathNotAllowed, SpecError
from squall.io.storage import LOCAL_PROTOCOLS, protocol
from squall.models.code import is_code_ref
from squall.spec import JobSpec

_GLOB_CHARS = "*?["
_MAX_LISTED = 100_000
_SHOWN = 80  # characters of a refused location quoted back (a data: URL can be megabytes)


class AllowedRoots:
    """Checks the locations of a spec against the configured roots."""

    def __init__(self, roots: Sequence[str]) -> None:
        self._local = [os.path.realpath(os.path.expanduser(r)) for r in roots if "://" not in r]
        self._remote = [r.rstrip("/") + "/" for r in roots if "://" in r]
        self._any = not roots

    def check_spec(self, spec: JobSpec) -> None:
        """Raise :class:`PathNotAllowed` naming the first field whose location lies outside the roots."""
        if self._any:
            return
        for uri in spec.input:
            self.check("input", uri, listing=True)
        self.check("output", spec.output)
        for name in ("model", "state_dict"):
            value = getattr(spec, name)
            if value and not is_code_ref(value):
                self.check(name, value)
        for name in ("log_file", "metrics_file"):
            value = getattr(spec, name)
            if value and value != "-":
                self.check(name, value)

    def check(self, field: str, uri: str, listing: bool = False) -> None:
        """Raise :class:`PathNotAllowed` if ``uri`` (and, with ``listing``, each file it names) is outside the roots."""
        if self._any:
            return
        if "::" in uri:
            raise PathNotAllowed(f"`{field}` {uri} chains filesystems (`::`); name the location itself, under the allowed roots")
        if protocol(uri) not in LOCAL_PROTOCOLS:
            self._check_url(field, uri)
            return
        path = uri.split("://", 1)[1] if "://" in uri else uri
        try:
            resolved = os.path.realpath(os.path.expanduser(path))
            self._inside(field, uri, resolved)
            if listing:
                for member in _members(path):
                    self._inside(field, uri, os.path.realpath(member), member)
        except (ValueError, OSError) as exc:  # a NUL byte, a name too long: not a path the job could read either
            raise SpecError(f"`{field}` {uri!r} is not a usable path ({exc}); fix the path") from None

    def _check_url(self, field: str, uri: str) -> None:
        if "://" not in uri:
            shown = uri if len(uri) <= _SHOWN else uri[:_SHOWN] + "…"
            raise PathNotAllowed(
                f"`{field}` {shown} is a `{protocol(uri)}:` URL, which names no location under the allowed roots; "
                f"give a path or URL under {self._roots()}"
            )
        if ".." in uri.split("://", 1)[1].split("/"):
            raise PathNotAllowed(f"`{field}` {uri} contains `..`; name the location without it")
        if not any(uri.startswith(root) or uri.rstrip("/") + "/" == root for root in self._remote):
            raise PathNotAllowed(f"`{field}` {uri} is outside the allowed roots {self._roots()}; ask the operator to allow it")

    def _inside(self, field: str, uri: str, resolved: str, member: str | None = None) -> None:
        if any(resolved == root or resolved.startswith(root.rstrip("/") + "/") for root in self._local):
            return
        via = f" ({member} leads to {resolved})" if member else (f" (it resolves to {resolved})" if resolved != uri else "")
        raise PathNotAllowed(f"`{field}` {uri} is outside the allowed roots {self._roots()}{via}; use a path under one of them")

    def _roots(self) -> list[str]:
        return [*self._local, *self._remote]


def _members(path: str) -> Iterable[str]:
    """The files and folders a local input names: a folder's whole tree, a glob's matches."""
    listed = 0
    targets = glob.glob(path, recursive=True) if any(c in path for c in _GLOB_CHARS) else [path]
    for target in targets:
        yield target
        if os.path.isdir(target):
            for folder, dirs, files in os.walk(target, followlinks=False):
                for name in [*dirs, *files]:
                    listed += 1
                    if listed > _MAX_LISTED:
                        raise PathNotAllowed(
                            f"{path} holds more than {_MAX_LISTED:,} files, too many to check against the allowed roots; "
                            "name a narrower folder or glob"
                        )
                    yield str(Path(folder) / name)
