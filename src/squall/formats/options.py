"""How input files are parsed: plain data, built once at planning and sent to every worker."""

from __future__ import annotations

from dataclasses import dataclass


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
