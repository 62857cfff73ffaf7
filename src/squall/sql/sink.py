"""A database table as the output, with the same commit protocol as files.

An attempt writes its rows (plus ``_squall_chunk``, the chunk they belong to)
into a staging table of its own, ``_squall_<hash>_p<chunk>_a<attempt>``
(``e`` for error rows), where ``<hash>`` is 12 hex digits of the target
table's name: short enough that no database cuts it (PostgreSQL silently cuts
identifiers at 63 bytes, which once made chunks share a staging table), unique
per output, and found again by :meth:`TableOutput.clear_attempts`. A target
table whose name (or ``<table>_errors``) the database would cut is refused.
Staging tables are bulk-loaded from Arrow (in one transaction on PostgreSQL).
The coordinator alone commits the winning attempt, in one transaction: delete
the chunk's rows from the table, insert the staging table's, drop the staging
table, and count the chunk's rows the table now holds, which is what the
store records. So each chunk replaces its own rows: a retry, a duplicate
delivery or a commit repeated after a coordinator crash never doubles a row,
and a zombie attempt only ever fills its own staging table, which is dropped.
A connection lost during a transaction (the server terminated it, or
restarted) is opened again and the transaction run again, a few times; a
commit whose answer was lost with its connection is recognised by its staging
table being gone. Error rows go the same way to ``<table>_errors``. The
manifest and the "final" mark live in the table ``_squall_outputs`` (one row
per output table: owner job, manifest JSON, ``success``), written last; a
reader that waits for ``success = 1`` never sees a partial result.

Names follow the file layout, under the location ``DATABASE_URL#table``:
``…#preds/_tmp/part-00007-a2`` is an attempt, ``…#preds/part-00007`` the
committed rows of chunk 7, ``…#preds/_errors/part-00007`` its error rows.
"""

from __future__ import annotations

import hashlib
import json
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence, TypeVar

import pyarrow as pa

from squall.errors import OutputExistsError, OutputShapeError, OutputUnreachable, SpecError
from squall.io import layout
from squall.io.output import Committed
from squall.sql.drivers import (
    close_quietly,
    connect,
    identifier_limit,
    is_connection_lost,
    is_sqlite,
    list_tables,
    literal,
    prepare_for_writers,
    quote,
    redacted,
)

CHUNK_COLUMN = "_squall_chunk"
OUTPUTS_TABLE = "_squall_outputs"
ERRORS_SUFFIX = "_errors"
RECONNECTS = 4
RECONNECT_DELAY_S = 0.5

T = TypeVar("T")


class TableOutput:
    """The table ``DATABASE_URL#table``; raises :class:`SpecError` for a name the database would cut."""

    concurrent_commits = 1  # every commit is a transaction on the one connection

    def __init__(self, location: str) -> None:
        self.uri = location
        self._url, _, self._table = location.partition("#")
        _refuse_cut_names(self._url, self._table)
        self._connection: Any = None

    @classmethod
    def location_of(cls, output: str, table: str | None) -> str:
        """``DATABASE_URL#table``; refuses a missing ``table``, or one the database would cut."""
        if not table:
            raise SpecError(f"output {redacted(output)} is a database: set `table` (--table) to the table the predictions go to")
        _refuse_cut_names(output, table)
        return f"{output}#{table}"

    def attempt_part(self, chunk_id: int, attempt: int, ext: str, prefix: str = "") -> str:
        """The attempt's name; its rows go to the staging table named after it."""
        return layout.join(self.uri, layout.TMP_DIR, f"part-{chunk_id:05d}-a{attempt}")

    def attempt_errors(self, chunk_id: int, attempt: int, prefix: str = "") -> str:
        """The name of the attempt's error rows (their own staging table)."""
        return layout.join(self.uri, layout.TMP_DIR, f"errors-{chunk_id:05d}-a{attempt}")

    def committed_part(self, chunk_id: int, ext: str, prefix: str = "") -> str:
        """The name of the chunk's rows in the table."""
        return layout.join(self.uri, f"part-{chunk_id:05d}")

    def committed_errors(self, chunk_id: int, prefix: str = "") -> str:
        """The name of the chunk's rows in ``<table>_errors``."""
        return layout.join(self.uri, layout.ERRORS_DIR, f"part-{chunk_id:05d}")

    def part_sink(self, uri: str, output_format: str) -> TablePartSink:
        """A writer into the attempt's staging table (``output_format`` does not apply to a table)."""
        return TablePartSink(self._url, self._staging(uri), uri)

    def claim(self, job_id: str, overwrite: bool, incremental: bool = False) -> None:
        """Make the table this job's; one that exists and is not is refused, or dropped with ``overwrite``."""
        owner = self.owner()
        if owner == job_id:
            return

        def take(cursor: Any, retried: bool) -> None:
            held = {self._table, self._errors_table} & list_tables(self._url, cursor)
            if (held or owner) and not overwrite:
                what = f"results of job {owner!r}" if owner else "rows squall did not write"
                raise OutputExistsError(
                    f"table {self._table} in {redacted(self._url)} already holds {what}; "
                    "choose another --table or pass --overwrite to replace it"
                )
            for table in held:
                cursor.execute(f"DROP TABLE {quote(table)}")
            cursor.execute(f"DELETE FROM {OUTPUTS_TABLE} WHERE name = {literal(self._table)}")
            cursor.execute(
                f"INSERT INTO {OUTPUTS_TABLE} (name, job_id, manifest, success) "
                f"VALUES ({literal(self._table)}, {literal(job_id)}, NULL, 0)"
            )

        self._run(take, f"claiming table {self._table}")
        self.clear_attempts()

    def owner(self) -> str | None:
        """The job ``_squall_outputs`` names for this table."""
        row = self._output_row("job_id")
        return None if row is None else str(row)

    def commit(self, attempt_uri: str, final_uri: str) -> Committed:
        """Replace the chunk's rows with the attempt's, in one transaction; returns the chunk's rows the
        table holds once that transaction commits (counted in it)."""
        staging = self._staging(attempt_uri)
        target = self._errors_table if f"/{layout.ERRORS_DIR}/" in final_uri else self._table
        chunk = _chunk_of(final_uri)

        def replace_rows(cursor: Any, retried: bool) -> int:
            # After a lost connection, a missing staging table means the lost transaction did commit
            # (it drops the staging table): count what it left instead of failing on the missing table.
            if not (retried and staging not in list_tables(self._url, cursor)):
                self._replace_chunk_rows(cursor, staging, target, chunk)
            cursor.execute(f"SELECT COUNT(*) FROM {quote(target)} WHERE {CHUNK_COLUMN} = {chunk}")
            return int(cursor.fetchone()[0])

        return Committed(final_uri, self._run(replace_rows, f"committing chunk {chunk} into table {target}"))

    def _replace_chunk_rows(self, cursor: Any, staging: str, target: str, chunk: int) -> None:
        cursor.execute(f"CREATE TABLE IF NOT EXISTS {quote(target)} AS SELECT * FROM {quote(staging)} WHERE 1 = 0")
        # Without an index each commit would scan the whole table to find its chunk's rows.
        index = quote(f"{self._staging_prefix}{'e' if target == self._errors_table else 'p'}_chunk")
        cursor.execute(f"CREATE INDEX IF NOT EXISTS {index} ON {quote(target)} ({CHUNK_COLUMN})")
        cursor.execute(f"DELETE FROM {quote(target)} WHERE {CHUNK_COLUMN} = {chunk}")
        cursor.execute(f"INSERT INTO {quote(target)} SELECT * FROM {quote(staging)}")
        cursor.execute(f"DROP TABLE {quote(staging)}")

    def discard(self, attempt_uri: str | None) -> None:
        """Drop a losing attempt's staging table."""
        if attempt_uri is None:
            return
        staging = quote(self._staging(attempt_uri))
        self._run(lambda cursor, retried: cursor.execute(f"DROP TABLE IF EXISTS {staging}"), f"dropping {staging}")

    def clear_attempts(self) -> None:
        """Drop every staging table of this output (and only of this output: their names carry its hash)."""

        def drop_staging(cursor: Any, retried: bool) -> None:
            for table in list_tables(self._url, cursor):
                if table.startswith(self._staging_prefix):
                    cursor.execute(f"DROP TABLE {quote(table)}")

        self._run(drop_staging, f"dropping the staging tables of {self._table}")

    def remove_unlisted(self, listed: set[str]) -> list[str]:
        """Delete the rows of chunks the manifest does not list (a part committed just before a crash
        whose chunk was then split or dead-lettered)."""

        def remove(cursor: Any, retried: bool) -> list[str]:
            removed = []
            present = list_tables(self._url, cursor)
            for table, folder in ((self._table, ""), (self._errors_table, f"{layout.ERRORS_DIR}/")):
                if table not in present:
                    continue
                cursor.execute(f"SELECT DISTINCT {CHUNK_COLUMN} FROM {quote(table)}")
                for (chunk,) in cursor.fetchall():
                    name = f"{folder}part-{int(chunk):05d}"
                    if name not in listed:
                        cursor.execute(f"DELETE FROM {quote(table)} WHERE {CHUNK_COLUMN} = {int(chunk)}")
                        removed.append(name)
            return removed

        return self._run(remove, f"removing unlisted chunks from {self._table}")

    def remove_final_markers(self) -> None:
        """Set ``success = 0`` until the job is finalized again."""
        self._set(success=False)

    def manifest(self) -> dict[str, Any] | None:
        """The manifest the last finalize stored, if any."""
        text = self._output_row("manifest")
        return None if text is None else dict(json.loads(str(text)))

    def finalize(self, manifest: dict[str, Any], success: bool) -> None:
        """The manifest and ``success`` in one statement: the output is final the moment both are there."""
        self._set(success=success, manifest=json.dumps(manifest, default=str))

    @property
    def _errors_table(self) -> str:
        return f"{self._table}{ERRORS_SUFFIX}"

    @property
    def _staging_prefix(self) -> str:
        return staging_prefix(self._table)

    def _staging(self, attempt_uri: str) -> str:
        """``…/_tmp/part-00007-a2`` → ``_squall_<hash>_p00007_a2``; ``errors-…`` → ``…_e00007_a2``."""
        kind, *numbers = attempt_uri.rsplit("/", 1)[-1].split("-")
        return f"{self._staging_prefix}{kind[0]}{'_'.join(numbers)}"

    def _set(self, success: bool, manifest: str | None = None) -> None:
        assignments = f"success = {int(success)}" + (f", manifest = {literal(manifest)}" if manifest else "")
        update = f"UPDATE {OUTPUTS_TABLE} SET {assignments} WHERE name = {literal(self._table)}"
        self._run(lambda cursor, retried: cursor.execute(update), f"marking table {self._table}")

    def _output_row(self, column: str) -> Any:
        def select(cursor: Any, retried: bool) -> Any:
            cursor.execute(f"SELECT {column} FROM {OUTPUTS_TABLE} WHERE name = {literal(self._table)}")
            row = cursor.fetchone()
            return None if row is None else row[0]

        return self._run(select, f"reading {OUTPUTS_TABLE}")

    def _run(self, work: Callable[[Any, bool], T], what: str) -> T:
        """``work(cursor, retried)`` in one transaction. A lost connection is opened again and the
        transaction run again (``retried`` is then true), up to :data:`RECONNECTS` times with backoff;
        after that :class:`OutputUnreachable` stops the job, and ``squall resume`` finishes it."""
        for reconnect in range(RECONNECTS + 1):
            try:
                with self._transaction() as cursor:
                    return work(cursor, reconnect > 0)
            except Exception as exc:  # the driver's own error types; only a lost connection is retried
                if not is_connection_lost(exc):
                    raise
                self._forget_connection()
                if reconnect == RECONNECTS:
                    raise OutputUnreachable(
                        f"{what} in {redacted(self._url)}: the connection failed {RECONNECTS + 1} times "
                        f"({' '.join(str(exc).split())}); "
                        "the chunk's rows are unchanged; once the database answers, `squall resume` finishes the job"
                    ) from exc
                time.sleep(RECONNECT_DELAY_S * 2**reconnect)
        raise AssertionError("unreachable")

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        """A cursor in one transaction, committed when the block ends, rolled back if it raises.

        On SQLite it starts with ``BEGIN IMMEDIATE``: it takes the write lock first, waiting for
        the workers' writes, where a transaction that read first would fail at once on its first write.
        """
        connection = self._db()
        sqlite = is_sqlite(self._url)
        with connection.cursor() as cursor:
            if sqlite:
                cursor.execute("BEGIN IMMEDIATE")
            try:
                yield cursor
            except BaseException:
                self._roll_back(connection, cursor)
                raise
            if sqlite:
                cursor.execute("COMMIT")
            else:
                connection.commit()

    def _roll_back(self, connection: Any, cursor: Any) -> None:
        """Roll back; on a dead connection there is nothing to roll back (the server did), so say nothing."""
        try:
            if is_sqlite(self._url):
                cursor.execute("ROLLBACK")
            else:
                connection.rollback()
        except Exception as exc:  # the driver's own error types
            if not is_connection_lost(exc):
                raise

    def _forget_connection(self) -> None:
        if self._connection is not None:
            close_quietly(self._connection)
            self._connection = None

    def _db(self) -> Any:
        if self._connection is None:
            prepare_for_writers(self._url)
            # SQLite's transactions are begun by hand (see _transaction), so its driver must not begin them.
            self._connection = connect(self._url, autocommit=is_sqlite(self._url))
            with self._transaction() as cursor:
                cursor.execute(
                    f"CREATE TABLE IF NOT EXISTS {OUTPUTS_TABLE} "
                    "(name TEXT PRIMARY KEY, job_id TEXT, manifest TEXT, success INTEGER)"
                )
        return self._connection


def staging_prefix(table: str) -> str:
    """The start of every staging table name of output table ``table``: ``_squall_`` and 12 hex digits of its name."""
    return f"_squall_{hashlib.sha256(table.encode()).hexdigest()[:12]}_"


def _refuse_cut_names(url: str, table: str) -> None:
    """A name the database would cut could name another table (PostgreSQL cuts at 63 bytes, silently)."""
    limit = identifier_limit(url)
    longest = len(f"{table}{ERRORS_SUFFIX}".encode())
    if limit is not None and longest > limit:
        raise SpecError(
            f"`table` {table!r} is too long: {redacted(url).split('://', 1)[0]} keeps names of at most {limit} bytes "
            f"and squall also writes `{table}{ERRORS_SUFFIX}`, so `table` may have at most "
            f"{limit - len(ERRORS_SUFFIX)} bytes, not {len(table.encode())}; choose a shorter --table"
        )


class TablePartSink:
    """One attempt's rows, bulk-loaded into its own staging table in one transaction."""

    def __init__(self, url: str, staging: str, uri: str) -> None:
        self.uri = uri
        self.rows = 0
        self._url = url
        self._staging = staging
        self._chunk = _chunk_of(uri)
        self._connection: Any = None
        self._schema: pa.Schema | None = None

    def write(self, batch: pa.RecordBatch) -> None:
        """Append ``batch`` with its chunk id; the first batch (re)creates the staging table."""
        if batch.num_rows == 0:
            return
        if self._schema is None:
            self._schema = batch.schema
            # On SQLite each statement commits alone: a transaction that has read cannot take the
            # write lock while another writer waits, and SQLite fails it at once instead of waiting.
            # The staging table needs no atomicity: only a committed attempt is ever copied.
            self._connection = connect(self._url, autocommit=is_sqlite(self._url))
            with self._connection.cursor() as cursor:
                cursor.execute(f"DROP TABLE IF EXISTS {quote(self._staging)}")
        elif not batch.schema.equals(self._schema):
            raise OutputShapeError(f"{self.uri}: a batch's schema {batch.schema} is not the part's {self._schema}")
        chunk = pa.array([self._chunk] * batch.num_rows, pa.int64())
        with self._connection.cursor() as cursor:
            cursor.adbc_ingest(self._staging, batch.append_column(CHUNK_COLUMN, chunk), mode="create_append")
        self.rows += batch.num_rows

    def close(self) -> str | None:
        """Commit the attempt's transaction; ``None`` when no row was written."""
        if self._connection is None:
            return None
        self._connection.commit()
        self._connection.close()
        return self.uri

    def abandon(self) -> None:
        """Roll back: the staging table never appears. Never raises: the error that made the invocation
        give up is the one to report, and a connection that died took its transaction with it."""
        if self._connection is not None:
            try:
                self._connection.rollback()
            except Exception:  # the driver's own error types; the server rolled back already
                pass
            close_quietly(self._connection)


def _chunk_of(uri: str) -> int:
    """The chunk id in a part's name: ``part-00007`` and ``part-00007-a2`` are chunk 7."""
    return int(uri.rsplit("/", 1)[-1].split("-")[1])
