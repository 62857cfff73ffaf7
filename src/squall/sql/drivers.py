"""Database URLs and the ADBC drivers that reach them, by URL scheme, imported on first use.

ADBC was picked over connectorx and SQLAlchemy: its drivers install from PyPI
as self-contained wheels (libpq and SQLite are inside), they stream a query's
result as Arrow record batches (memory bounded by the batch, where connectorx
materialises the whole result), and they bulk-load Arrow with PostgreSQL's
binary COPY inside the caller's transaction, which is what an idempotent sink
needs. SQLAlchemy would convert every value through Python objects.

Adding a database is one line in ``_DRIVERS``: scheme → ADBC DB-API module.
"""

from __future__ import annotations

import importlib
from typing import Any

from squall.errors import MissingDependency
from squall.secrets import for_connection, redact_url

_DRIVERS = {
    "postgresql": "adbc_driver_postgresql.dbapi",
    "postgres": "adbc_driver_postgresql.dbapi",
    "sqlite": "adbc_driver_sqlite.dbapi",
}


_SQLITE_BUSY_MS = 60_000
_LIST_TABLES = {
    "postgresql": "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()",
    "postgres": "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()",
    "sqlite": "SELECT name FROM sqlite_master WHERE type = 'table'",
}


_IDENTIFIER_BYTES = {"postgresql": 63, "postgres": 63}  # NAMEDATALEN - 1; longer names are cut, silently


def scheme(url: str) -> str:
    """The URL's scheme, without a ``+driver`` suffix (``postgresql+psycopg`` is ``postgresql``)."""
    return url.split("://", 1)[0].split("+", 1)[0].lower() if "://" in url else ""


def is_database_url(url: str) -> bool:
    """Whether ``url`` names a database (``postgresql://…``, ``sqlite:///…``) rather than files."""
    return scheme(url) in _DRIVERS


def connect(url: str, autocommit: bool = False) -> Any:
    """A DB-API connection (ADBC) to the database ``url`` names; autocommit off unless asked.

    A password stored as ``***`` (:mod:`squall.secrets`) is given back from this process's memory, or left
    for libpq to find (``PGPASSWORD``, ``~/.pgpass``)."""
    url = for_connection(url)
    name = scheme(url)
    try:
        module = importlib.import_module(_DRIVERS[name])
    except ImportError:
        raise MissingDependency(f"{url}: the {name} driver is not installed; pip install 'squall[sql]'") from None
    if name != "sqlite":
        return module.connect("postgresql://" + url.split("://", 1)[1], autocommit=autocommit)
    connection = module.connect(_sqlite_path(url), autocommit=autocommit)
    with connection.cursor() as cursor:
        # Workers write their attempts at the same time; wait for the file lock instead of failing.
        cursor.execute(f"PRAGMA busy_timeout = {_SQLITE_BUSY_MS}")
    return connection


def identifier_limit(url: str) -> int | None:
    """The longest identifier (in UTF-8 bytes) the database keeps whole; ``None`` where it has no limit."""
    return _IDENTIFIER_BYTES.get(scheme(url))


def is_connection_lost(exc: BaseException) -> bool:
    """Whether a driver error means the connection failed (terminated by the server, network gone, server
    restarting) rather than the statement: the same work on a new connection may succeed."""
    try:
        from adbc_driver_manager import OperationalError
    except ImportError:
        return False
    return isinstance(exc, OperationalError)


def close_quietly(connection: Any) -> None:
    """Close a connection that may already be dead; a dead one cannot be closed cleanly, and need not be."""
    try:
        connection.close()
    except Exception:  # the driver's own error types, or its refusal to close a broken handle
        pass


def is_sqlite(url: str) -> bool:
    """Whether ``url`` names a SQLite file."""
    return scheme(url) == "sqlite"


def prepare_for_writers(url: str) -> None:
    """Let readers and concurrent writers share the database: SQLite files switch to WAL, where a
    worker reading its input never blocks another worker's commit (in the default journal mode it
    does, and the two would wait on each other)."""
    if not is_sqlite(url):
        return
    with connect(url, autocommit=True) as connection, connection.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode = WAL")


def _sqlite_path(url: str) -> str:
    """``sqlite:///relative.db`` and ``sqlite:////absolute.db``, as SQLAlchemy spells them."""
    path = url.split("://", 1)[1]
    return path[1:] if path.startswith("/") else path


def list_tables(url: str, cursor: Any) -> set[str]:
    """The tables of the connection's default schema."""
    cursor.execute(_LIST_TABLES[scheme(url)])
    return {str(row[0]) for row in cursor.fetchall()}


def literal(text: str) -> str:
    """``text`` as a SQL string literal (standard quoting, which PostgreSQL and SQLite both follow)."""
    return "'" + text.replace("'", "''") + "'"


def quote(identifier: str) -> str:
    """An identifier quoted for SQL (PostgreSQL and SQLite both use double quotes)."""
    return '"' + identifier.replace('"', '""') + '"'


def redacted(url: str) -> str:
    """``url`` with any password replaced by ``***``, for messages and the ``_source`` column."""
    return redact_url(url)
