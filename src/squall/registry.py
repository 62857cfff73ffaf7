"""Named plugins: squall's own and other packages', imported on first use.

A registry maps a name (a model flavor, an input format, a backend...) to the
object that implements it, written as ``"module:attr"`` and imported only
when a job uses it: listing names costs nothing, and a missing extra fails
only the job that needs it, with the command that installs it. A registry is
the one place that lists its names; the spec validates against it.

Other packages add names through an entry-point group, as fsspec's
implementations do::

    [project.entry-points."squall.flavors"]
    my-flavor = "my_package.flavor:MyFlavor"

Groups: ``squall.flavors``, ``squall.formats``, ``squall.output_formats``,
``squall.outputs``, ``squall.backends``, ``squall.triggers``. A built-in
declares how to recognise what it handles (file extensions, URL schemes...)
in its :class:`Plugin` line, so that recognising a file needs no import; a
package's plugin is chosen by name (``--flavor rule``, ``--format fwf``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import cached_property
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from squall.errors import SquallError, UnknownPlugin

T = TypeVar("T")


@dataclass(frozen=True)
class Plugin:
    """One registered name: what implements it (``module:attr``), the squall extra that installs what it
    needs, and how to recognise what it handles without importing it: file ``extensions``, ``sniff``
    (an extension many share, and bytes the file's head must hold), ``markers`` (a file a directory
    holds) and URL ``schemes``. A package's plugin is recognised by name only."""

    name: str
    target: str
    extra: str | None = None
    extensions: tuple[str, ...] = ()
    sniff: tuple[tuple[str, bytes], ...] = ()
    markers: tuple[str, ...] = ()
    schemes: tuple[str, ...] = ()


class Registry(Generic[T]):
    """The plugins of one kind: the built-ins given here, then those of installed packages' entry points."""

    def __init__(self, kind: str, group: str, builtins: tuple[Plugin, ...], error: type[SquallError] = UnknownPlugin) -> None:
        self.kind = kind
        self.group = group
        self._builtins = builtins
        self._error = error

    @cached_property
    def _plugins(self) -> dict[str, Plugin]:
        found = {plugin.name: plugin for plugin in self._builtins}
        for point in entry_points(group=self.group):
            found.setdefault(point.name, Plugin(point.name, point.value))
        return found

    def names(self) -> list[str]:
        """Every registered name, built-ins first."""
        return list(self._plugins)

    def plugins(self) -> list[Plugin]:
        """Every registered plugin, built-ins first."""
        return list(self._plugins.values())

    def plugin(self, name: str) -> Plugin:
        """The plugin registered as ``name``; raises naming every registered name."""
        try:
            return self._plugins[name]
        except KeyError:
            raise self._error(self.unknown(name)) from None

    def unknown(self, name: str) -> str:
        """The message for a name nothing registered."""
        return (
            f"unknown {self.kind} {name!r}; use one of {', '.join(self.names())} "
            f"(a package adds one under the entry point group `{self.group}`)"
        )

    def load(self, name: str) -> T:
        """The object registered as ``name``, imported now; a missing dependency names the extra that installs it."""
        plugin = self.plugin(name)
        module_name, _, attribute = plugin.target.partition(":")
        try:
            found: Any = importlib.import_module(module_name)
        except ImportError as exc:
            hint = f"pip install 'squall[{plugin.extra}]'" if plugin.extra else f"install the package that provides {module_name}"
            raise self._error(f"the {self.kind} {name!r} cannot be loaded ({exc}); {hint}") from None
        for part in filter(None, attribute.split(".")):
            found = getattr(found, part)
        return found  # type: ignore[no-any-return]

    def by_extension(self, path: str) -> str | None:
        """The first name (in registration order) one of whose extensions ``path`` ends with, or ``None``."""
        lowered = path.lower()
        return next((p.name for p in self.plugins() if any(lowered.endswith(ext) for ext in p.extensions)), None)

    def extensions(self) -> list[str]:
        """Every extension that names a plugin."""
        return [ext for p in self.plugins() for ext in p.extensions]

    def by_scheme(self, uri: str) -> str | None:
        """The name that serves ``uri``'s scheme (``postgresql://…``), or ``None``."""
        scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
        return next((p.name for p in self.plugins() if scheme and scheme in p.schemes), None)


__all__ = ["Plugin", "Registry", "UnknownPlugin"]
