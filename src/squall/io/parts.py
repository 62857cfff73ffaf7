"""A part file: one chunk attempt's output, opened on its first row, in the job's output format."""

from __future__ import annotations

import contextlib
import os
from typing import Any, BinaryIO

import fsspec
import pyarrow as pa
from fsspec.implementations.local import LocalFileSystem

from squall.errors import OutputShapeError
from squall.io.part_formats import OUTPUT_FORMATS, PartWriter
from squall.io.storage import is_remote

_FOLDERS_MADE: set[str] = set()


class PartFile:
    """An output file opened on first write, so that a chunk with no rows leaves no file."""

    def __init__(self, uri: str, output_format: str) -> None:
        self.uri = uri
        self.rows = 0
        self._format = output_format
        self._opened: Any = None
        self._local: BinaryIO | None = None
        self._writer: PartWriter | None = None
        self._schema: pa.Schema | None = None

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        if self._writer is None:
            handle = self._open()
            self._schema = batch.schema
            self._writer = OUTPUT_FORMATS.load(self._format)(handle, batch.schema)
        if not batch.schema.equals(self._schema):
            raise OutputShapeError(f"{self.uri}: a batch's schema {batch.schema} is not the part's {self._schema}")
        self._writer.write(batch)
        self.rows += batch.num_rows

    def _open(self) -> Any:
        """The file, opened for writing: on this machine's disk with plain ``open`` (its folder made once per
        process), elsewhere through fsspec."""
        if is_remote(self.uri):
            self._opened = fsspec.open(self.uri, "wb", auto_mkdir=True)
            return self._opened.__enter__()
        path = LocalFileSystem._strip_protocol(self.uri)
        folder = os.path.dirname(path)
        if folder not in _FOLDERS_MADE:
            os.makedirs(folder, exist_ok=True)
            _FOLDERS_MADE.add(folder)
        try:
            self._local = open(path, "wb")  # noqa: SIM115 -- closed by close() or abandon(), after the writer
        except FileNotFoundError:  # the folder was removed since (a finalize cleared _tmp/): make it again
            os.makedirs(folder, exist_ok=True)
            self._local = open(path, "wb")  # noqa: SIM115
        return self._local

    def close(self) -> str | None:
        """Finish the file; returns its URI, or ``None`` when nothing was written."""
        if self._writer is None:
            return None
        self._writer.close()
        if self._local is not None:
            self._local.close()
        else:
            self._opened.__exit__(None, None, None)
        return self.uri

    def abandon(self) -> None:
        """Close without caring whether the file is complete (it will be deleted). Never raises: the error
        that made the attempt give up is the one to report, and closing a file on a full disk fails again."""
        closers = [self._writer.close] if self._writer is not None else []
        if self._local is not None:
            closers.append(self._local.close)
        if self._opened is not None:
            closers += [handle.close for handle in reversed(self._opened.fobjects)]  # each, even if one fails
        for close in closers:
            with contextlib.suppress(Exception):
                close()

