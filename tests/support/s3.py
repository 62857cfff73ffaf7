"""Objects on the loopback S3 server: a filesystem on it, frames uploaded, outputs read back and checked."""

from __future__ import annotations

import io
import json

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from support.s3server import CREDENTIALS, S3Server


def filesystem(s3: S3Server) -> fsspec.AbstractFileSystem:
    # The credentials are given, not looked up: a client that found none in this process's environment at the
    # moment would fall back to anonymous requests, which moto refuses (403) for the objects squall wrote.
    return fsspec.filesystem("s3", endpoint_url=s3.endpoint, key=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                             secret=CREDENTIALS["AWS_SECRET_ACCESS_KEY"], anon=False, skip_instance_cache=True,
                             use_listings_cache=False)


def upload_frame(fs: fsspec.AbstractFileSystem, frame: pd.DataFrame, path: str, fmt: str) -> None:
    buffer = io.BytesIO()
    if fmt == "parquet":
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), buffer, row_group_size=500)
    elif fmt == "csv":
        frame.to_csv(buffer, index=False)
    else:
        frame.to_json(buffer, orient="records", lines=True)
    fs.pipe_file(path, buffer.getvalue())


def read_s3_output(fs: fsspec.AbstractFileSystem, output: str) -> pd.DataFrame:
    """What a reader of the output prefix sees: every committed part, as one frame."""
    parts = sorted(p for p in fs.ls(output, detail=False) if p.rsplit("/", 1)[-1].startswith("part-"))
    return pd.concat([pd.read_parquet(io.BytesIO(fs.cat_file(p))) for p in parts], ignore_index=True)


def assert_committed_exactly(fs: fsspec.AbstractFileSystem, output: str) -> dict:
    """_SUCCESS is there; the prefix holds exactly the manifest's parts, each with the rows the manifest says."""
    names = {p.rsplit("/", 1)[-1] for p in fs.ls(output, detail=False)}
    assert "_SUCCESS" in names and "_tmp" not in names
    manifest = json.loads(fs.cat_file(f"{output}/_manifest.json"))
    listed = sorted(part["path"] for part in manifest["parts"])
    assert sorted(n for n in names if n.startswith("part-")) == listed
    for part in manifest["parts"]:
        assert pq.ParquetFile(io.BytesIO(fs.cat_file(f"{output}/{part['path']}"))).metadata.num_rows == part["rows"]
    return manifest


def upload_ids(fs: fsspec.AbstractFileSystem, path: str, rows: int, row_group_size: int = 250) -> None:
    """A Parquet object of ``rows`` rows: an ``id`` key and its ``id_copy`` feature (what the fault models read)."""
    ids = pa.array(range(rows), pa.int64())
    buffer = io.BytesIO()
    pq.write_table(pa.table({"id": ids, "id_copy": ids}), buffer, row_group_size=row_group_size)
    fs.pipe_file(path, buffer.getvalue())
