"""How input files are parsed: plain data, built once at planning and sent to every worker.

A format option is a spec field and a field of the same name here: planning
copies every such field from the spec (:meth:`ReadOptions.from_spec`), so
nothing else lists them.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any


@dataclass(frozen=True)
class ReadOptions:
    """How to parse input files; built once from the spec and sent to workers."""

    delimiter: str = ","
    quotechar: str = '"'
    header: bool = True
    multiline: bool = False
    column_types: tuple[tuple[str, str], ...] = ()
    columns: tuple[str, ...] = ()
    max_line_bytes: int = 64 * 1024 * 1024
    query: str | None = None
    partition_column: str | None = None

    @classmethod
    def from_spec(cls, spec: Any, **derived: Any) -> ReadOptions:
        """The options ``spec`` (a :class:`~squall.spec.JobSpec`) sets: each field of the same name, then ``derived``
        (what planning learned: the columns, their types, a tab delimiter for ``.tsv`` files)."""
        given = {f.name: getattr(spec, f.name) for f in fields(cls) if f.name in type(spec).model_fields}
        return replace(cls(**given), **derived)
