"""State that only its owner may read: the folders squall makes for state are 0700, its state files 0600.

Job state holds what a job read and wrote, and the service's queue what was
submitted to it; on a shared machine no other account should read either.
SQLite creates a database's ``-wal`` and ``-shm`` files with the database
file's own mode, so making the database file first is enough for all three.
A folder the user named that exists already is left as it is.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Any

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """``path`` as a folder; made (with any missing parents) owner-only if it did not exist."""
    missing = []
    folder = path
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=DIR_MODE)
        except FileExistsError:
            pass  # made meanwhile by another process
    return path


def private_file(path: Path) -> Path:
    """``path`` as an owner-only file: made empty if it did not exist, its mode narrowed if it did."""
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, FILE_MODE))
    try:
        os.chmod(path, FILE_MODE)
    except PermissionError:
        pass  # another account's file: theirs to narrow
    return path


def open_private(path: Path, mode: str, **kwargs: Any) -> IO[Any]:
    """``open(path, mode)``, a file it creates being owner-only."""
    return open(path, mode, opener=_owner_only, **kwargs)


def _owner_only(path: str, flags: int) -> int:
    return os.open(path, flags, FILE_MODE)
