"""The output committer: the coordinator alone decides which attempt of a chunk wins and commits it.

Workers write under attempt names in ``_tmp/`` (:mod:`squall.io.layout`). On a
local or POSIX filesystem committing the winner is an atomic rename to the
chunk's part name; on an object store it is a server-side copy (the bytes do
not pass through the coordinator) and the attempt's object is deleted. Every
other attempt's file is deleted. A duplicate delivery, a late zombie or a
retry therefore never replaces or doubles a committed part, even one that
writes after the job ended: its file lies in ``_tmp/``, which readers skip.
``_manifest.json`` and then ``_SUCCESS`` are written last.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from fsspec.core import url_to_fs

from squall.errors import OutputExistsError, SpecError
from squall.io import layout
from squall.io.output import Committed

if TYPE_CHECKING:
    from squall.io.parts import PartFile

REMOTE_COMMITS = 16  # server-side copies in flight at once: each waits on the store, not on this machine

# The part writers and counters load pyarrow: imported where a part is written or counted, so that resolving a
# job's output (before its workers start) does not wait for pyarrow.


class OutputDir:
    """A job's output directory, on local disk or an object store."""

    def __init__(self, uri: str) -> None:
        self.uri = uri.rstrip("/") or "/"
        self._fs, self._path = url_to_fs(self.uri)
        self._renames = layout.commits_by_rename(self.uri)
        self.concurrent_commits = 1 if self._renames else REMOTE_COMMITS
        self._folders: set[str] = set()  # folders this committer made: each is made once, not per part

    @classmethod
    def location_of(cls, output: str, table: str | None) -> str:
        """``output`` as an absolute path or URL; a ``table`` here is a mistake."""
        if table:
            raise SpecError(f"`table` is only for a database output, and output {output} is a directory; drop `table`")
        return output if "://" in output else os.path.abspath(output)

    def attempt_part(self, chunk_id: int, attempt: int, ext: str, prefix: str = "") -> str:
        """Where attempt ``attempt`` of chunk ``chunk_id`` writes its predictions."""
        return layout.attempt_part(self.uri, chunk_id, attempt, ext, prefix)

    def attempt_errors(self, chunk_id: int, attempt: int, prefix: str = "") -> str:
        """Where that attempt writes its error rows."""
        return layout.attempt_errors(self.uri, chunk_id, attempt, prefix)

    def committed_part(self, chunk_id: int, ext: str, prefix: str = "") -> str:
        """The name a chunk's committed predictions have."""
        return layout.committed_part(self.uri, chunk_id, ext, prefix)

    def committed_errors(self, chunk_id: int, prefix: str = "") -> str:
        """The name a chunk's committed error rows have."""
        return layout.committed_errors(self.uri, chunk_id, prefix)

    def part_sink(self, uri: str, output_format: str) -> PartFile:
        """A part file at ``uri``, opened on its first row."""
        from squall.io.parts import PartFile

        return PartFile(uri, output_format)

    def claim(self, job_id: str, overwrite: bool, incremental: bool = False) -> None:
        """Make the location this job's; refuse one holding anything else unless ``overwrite``.

        An ``incremental`` job takes over another squall job's output (to add to
        it): the old ``_SUCCESS`` goes at once, so no reader sees the output
        while parts are replaced; the old manifest stays until the new one.
        """
        owner = self._owner()
        if owner == job_id:
            return
        if incremental and owner is not None and not overwrite:
            self._remove(layout.SUCCESS_FILE)
            self.clear_attempts()
            self._write_text(layout.OWNER_FILE, json.dumps({"job_id": job_id}))
            return
        if self._fs.exists(self._path) and self._fs.ls(self._path):
            if not overwrite:
                what = f"results of job {owner!r}" if owner else "files squall did not write"
                raise OutputExistsError(
                    f"{self.uri} already holds {what}; choose another --output or pass --overwrite to replace them"
                )
            self._fs.rm(self._path, recursive=True)
        self._fs.makedirs(self._path, exist_ok=True)
        self._write_text(layout.OWNER_FILE, json.dumps({"job_id": job_id}))

    def owner(self) -> str | None:
        """The job that owns this location, if a squall job does."""
        return self._owner()

    def remove_unlisted(self, listed: set[str]) -> list[str]:
        """Delete committed-looking part files that ``listed`` (paths relative to the output) does not name.

        A chunk whose part was committed just before its coordinator died (renamed or copied, not yet
        recorded), and that was then split or dead-lettered, would otherwise leave a part beside its
        children's, doubling rows for a reader of the folder.
        """
        removed = []
        for folder in (self._path, f"{self._path}/{layout.ERRORS_DIR}"):
            if not self._fs.isdir(folder):
                continue
            for path in self._fs.ls(folder, detail=False, refresh=True):
                relative = path[len(self._path) + 1 :]
                if path.rsplit("/", 1)[-1].startswith("part-") and relative not in listed:
                    self._fs.rm(path)
                    removed.append(relative)
        return removed

    def part_sizes(self) -> dict[str, int]:
        """Bytes of every committed-looking prediction part, from one listing of the output folder."""
        sizes: dict[str, int] = {}
        for entry in self._fs.ls(self._path, detail=True, refresh=True):
            name = str(entry["name"]).rstrip("/").rsplit("/", 1)[-1]
            if entry.get("type") == "file" and name.startswith("part-"):
                sizes[layout.join(self.uri, name)] = int(entry["size"])
        return sizes

    def merge_parts(self, parts: Sequence[str], final_uri: str) -> Committed:
        """Concatenate Parquet ``parts`` into ``final_uri``: on local disk written under ``_tmp/`` and renamed
        into place, on an object store one whole-object PUT; a reader never sees a half-written merge."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        tables = []
        for uri in parts:
            with self._fs.open(self._fs._strip_protocol(uri), "rb") as handle:
                tables.append(pq.read_table(handle))
        merged = pa.concat_tables(tables)
        name = final_uri.rstrip("/").rsplit("/", 1)[-1]
        target = layout.join(self.uri, layout.TMP_DIR, f"merging-{name}") if self._renames else final_uri
        if self._renames:
            self._fs.makedirs(layout.join(self._path, layout.TMP_DIR), exist_ok=True)
        with self._fs.open(self._fs._strip_protocol(target), "wb") as handle:
            pq.write_table(merged, handle, compression="zstd")
        if self._renames:
            os.replace(self._fs._strip_protocol(target), self._fs._strip_protocol(final_uri))
        return Committed(final_uri, merged.num_rows)

    def _owner(self) -> str | None:
        path = f"{self._path}/{layout.OWNER_FILE}"
        if not self._fs.exists(path):
            return None
        try:
            return str(json.loads(self._fs.cat_file(path))["job_id"])
        except (ValueError, KeyError):
            return None

    def commit(self, attempt_uri: str, final_uri: str) -> Committed:
        """Commit a winning attempt's file under ``final_uri``: renamed (atomic on a local or POSIX filesystem),
        or copied server-side and the attempt deleted (an object store, where a copy is whole or absent);
        its rows are counted from the committed file."""
        source, target = self._fs._strip_protocol(attempt_uri), self._fs._strip_protocol(final_uri)
        if self._renames:
            folder = os.path.dirname(target)
            if folder not in self._folders:
                os.makedirs(folder, exist_ok=True)
                self._folders.add(folder)
            os.replace(source, target)  # atomic: the part is there whole, or not at all
        else:
            self._fs.copy(source, target)
            self._fs.rm(source)
        from squall.io.part_formats import count_rows

        with open(target, "rb") if self._renames else self._fs.open(target, "rb") as handle:  # plain open: per chunk
            return Committed(final_uri, count_rows(handle, final_uri))

    def discard(self, attempt_uri: str | None) -> None:
        """Delete a losing attempt's file, if it exists."""
        if attempt_uri is None:
            return
        _, path = url_to_fs(attempt_uri)
        if self._fs.exists(path):
            self._fs.rm(path)

    def clear_attempts(self) -> None:
        """Remove every attempt file left in ``_tmp/``."""
        path = f"{self._path}/{layout.TMP_DIR}"
        if self._fs.exists(path):
            self._fs.rm(path, recursive=True)

    def remove_final_markers(self) -> None:
        """Withdraw ``_SUCCESS`` before a resume, redrive or replay changes the output again."""
        self._remove(layout.SUCCESS_FILE)

    def manifest(self) -> dict[str, Any] | None:
        """The output's manifest, or ``None`` if it has none yet."""
        path = f"{self._path}/{layout.MANIFEST_FILE}"
        if not self._fs.exists(path):
            return None
        return dict(json.loads(self._fs.cat_file(path)))

    def _remove(self, name: str) -> None:
        path = f"{self._path}/{name}"
        if self._fs.exists(path):
            self._fs.rm(path)

    def finalize(self, manifest: dict[str, Any], success: bool) -> None:
        """Write the manifest, then ``_SUCCESS`` when the job's results are final."""
        self._write_text(layout.MANIFEST_FILE, json.dumps(manifest, indent=2, default=str))
        if success:
            self._write_text(layout.SUCCESS_FILE, "")

    def _write_text(self, name: str, text: str) -> None:
        with self._fs.open(f"{self._path}/{name}", "w") as handle:
            handle.write(text)
