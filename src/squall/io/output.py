"""Where a job's results go: the contract every output implements, and the registry that picks one by location.

Two implementations: :class:`squall.io.commit.OutputDir` (``files``: a
directory on local disk or an object store, parts as files) and
:class:`squall.sql.sink.TableOutput` (``table``: a database table), chosen by
the location's URL scheme; another package adds one under the entry point
group ``squall.outputs``. Both follow one
commit protocol: an invocation writes its rows under an attempt name, the
coordinator alone decides which attempt of a chunk wins and commits it, every
other attempt is discarded, and finalize writes the manifest, then marks the
output final.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import pyarrow as pa

from squall.registry import Plugin, Registry


@dataclass(frozen=True)
class Committed:
    """A committed attempt: the name its rows are committed under, and how many rows the output holds
    there now, counted from the output itself (a footer, the file's lines, the table's rows), never
    taken from the worker's report."""

    uri: str
    rows: int


class PartSink(Protocol):
    """One attempt's rows, written batch by batch; nothing exists at ``uri`` until the first row."""

    uri: str
    rows: int

    def write(self, batch: pa.RecordBatch) -> None:
        """Append ``batch`` (its schema fixed by the first batch written)."""

    def close(self) -> str | None:
        """Make the attempt's rows complete; returns ``uri``, or ``None`` when no row was written."""

    def abandon(self) -> None:
        """Stop writing; the attempt will be discarded, complete or not."""


class Output(Protocol):
    """A job's output location and its committer."""

    uri: str
    concurrent_commits: int
    """How many :meth:`commit` calls the coordinator may run at once, from threads: more than one only where
    a commit waits on a remote store (a server-side copy), never where commits share one connection."""

    def __init__(self, location: str) -> None: ...

    @classmethod
    def location_of(cls, output: str, table: str | None) -> str:
        """The location a spec's ``output`` (and ``table``) name, spelled as this output's constructor takes it;
        raises :class:`squall.errors.SpecError` naming the field when they do not fit this output."""

    def attempt_part(self, chunk_id: int, attempt: int, ext: str, prefix: str = "") -> str:
        """Where attempt ``attempt`` of chunk ``chunk_id`` writes its predictions."""

    def attempt_errors(self, chunk_id: int, attempt: int, prefix: str = "") -> str:
        """Where that attempt writes its error rows."""

    def committed_part(self, chunk_id: int, ext: str, prefix: str = "") -> str:
        """The name a chunk's committed predictions have."""

    def committed_errors(self, chunk_id: int, prefix: str = "") -> str:
        """The name a chunk's committed error rows have."""

    def part_sink(self, uri: str, output_format: str) -> PartSink:
        """A writer for the attempt named ``uri``."""

    def claim(self, job_id: str, overwrite: bool, incremental: bool = False) -> None:
        """Make the location this job's; refuse one holding anything else unless ``overwrite``."""

    def owner(self) -> str | None:
        """The job that owns this location, if a squall job does."""

    def commit(self, attempt_uri: str, final_uri: str) -> Committed:
        """Commit a winning attempt; returns the name its rows are committed under and the rows counted there."""

    def discard(self, attempt_uri: str | None) -> None:
        """Delete a losing attempt, if it exists."""

    def clear_attempts(self) -> None:
        """Delete every attempt (``_tmp/``, staging tables): they are kept apart from the committed parts,
        so an attempt written after its job ended is never read as a result."""

    def remove_unlisted(self, listed: set[str]) -> list[str]:
        """Delete committed parts that ``listed`` (names relative to the output) does not name; returns them."""

    def remove_final_markers(self) -> None:
        """Withdraw the "final" mark before a resume, redrive or replay changes the output again."""

    def manifest(self) -> dict[str, Any] | None:
        """The output's manifest, or ``None`` if it has none yet."""

    def finalize(self, manifest: dict[str, Any], success: bool) -> None:
        """Write the manifest, then mark the output final when ``success``."""


@runtime_checkable
class MergesParts(Protocol):
    """An output of part files that can merge small ones (:mod:`squall.coalesce`); a table output cannot."""

    def part_sizes(self) -> dict[str, int]:
        """Bytes of every committed prediction part, by URI as committed."""

    def merge_parts(self, parts: Sequence[str], final_uri: str) -> Committed:
        """Write the rows of ``parts`` (Parquet parts of one schema), in order, as one part at ``final_uri``:
        whole, or not at all. The parts themselves are left as they are."""


OUTPUTS: Registry[type[Output]] = Registry("output", "squall.outputs", (
    Plugin("files", "squall.io.commit:OutputDir"),
    Plugin("table", "squall.sql.sink:TableOutput", "sql", schemes=("postgresql", "postgres", "sqlite")),
))


def output_kind(location: str) -> str:
    """The output that serves ``location``: the one whose URL scheme it has, else ``files`` (any fsspec URL or path)."""
    return OUTPUTS.by_scheme(location) or "files"


def open_output(location: str) -> Output:
    """The output at ``location``: a database table (``postgresql://…#table``), a directory, or a plugin's."""
    return OUTPUTS.load(output_kind(location))(location)
